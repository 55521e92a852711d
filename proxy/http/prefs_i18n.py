"""The preference centre's texts in English, Vietnamese, Arabic (right to left) and Thai."""

from __future__ import annotations

PREFS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Your email choices",
        "intro": "Choose what we send to {address}. Every change applies from the next "
                 "email, including emails already waiting to be sent.",
        "streams": "What you receive",
        "refused": "you unsubscribed from this",
        "frequency": "How often",
        "as_sent": "As we send them",
        "weekly": "At most one email a week",
        "monthly": "At most one email a month",
        "save": "Save my choices",
        "pause": "Take a break",
        "pause30": "Pause for 30 days",
        "pause90": "Pause for 90 days",
        "paused": "Paused until {date}.",
        "resume": "Resume now",
        "leave_heading": "Leave everything",
        "leave_explain": "Stop all our marketing emails with one click.",
        "leave": "Leave everything",
        "left": "You left all our marketing emails on {date}.",
        "data": "Your data",
        "download_explain": "A JSON file with what we hold about you: consent records with "
                            "their proof, refusals, choices, activity and recent decisions.",
        "download": "Download my data",
        "erase": "Erase me",
        "erase_explain": "Delete what we hold about you. You will be asked to confirm.",
        "erase_title": "Erase your data?",
        "erase_confirm": "This deletes the consent records, choices, activity and history "
                         "we hold for {address}. It cannot be undone. Download your data "
                         "first if you want a copy.",
        "erase_yes": "Yes, erase my data",
        "cancel": "No, go back",
        "erased_title": "Your data has been erased",
        "erased": "We deleted your consent records, refusals, choices, activity, send "
                  "history and decision history.",
        "kept": "We kept one thing: a one-way code made from your address with a secret "
                "key. It cannot be turned back into your address; it only lets us recognise "
                "the address so that we never send it marketing email again. Entries about "
                "past emails in our general mail log are kept until they expire, as the "
                "record of what was sent, and emails already waiting are dropped.",
        "gone": "There is nothing left to show: the data for this address was erased. Only "
                "the one-way code that stops our marketing emails is kept.",
        "none": "We send no marketing emails to {address}: you have not joined any of our "
                "lists.",
        "rejoin_explain": "Changed your mind? Subscribing again is up to you: we record it, "
                          "with this page as the proof of your consent.",
        "rejoin": "Subscribe again",
        "rejoined": "Subscribed again. This applies from the next email.",
        "view": "See my data",
        "saved": "Saved. This applies from the next email.",
        "form_title": "Please try again",
        "form": "This form is too old or did not come from this page. Nothing was changed.",
        "back": "Back to your choices",
    },
    "vi": {
        "title": "Lựa chọn email của bạn",
        "intro": "Chọn những gì chúng tôi gửi đến {address}. Mọi thay đổi áp dụng từ email "
                 "tiếp theo, kể cả các email đang chờ gửi.",
        "streams": "Những gì bạn nhận",
        "refused": "bạn đã hủy đăng ký mục này",
        "frequency": "Tần suất",
        "as_sent": "Như chúng tôi gửi",
        "weekly": "Tối đa một email mỗi tuần",
        "monthly": "Tối đa một email mỗi tháng",
        "save": "Lưu lựa chọn",
        "pause": "Tạm nghỉ",
        "pause30": "Tạm dừng 30 ngày",
        "pause90": "Tạm dừng 90 ngày",
        "paused": "Đã tạm dừng đến {date}.",
        "resume": "Tiếp tục ngay",
        "leave_heading": "Rời khỏi tất cả",
        "leave_explain": "Ngừng mọi email tiếp thị của chúng tôi chỉ với một lần nhấp.",
        "leave": "Rời khỏi tất cả",
        "left": "Bạn đã rời khỏi mọi email tiếp thị của chúng tôi vào {date}.",
        "data": "Dữ liệu của bạn",
        "download_explain": "Một tệp JSON gồm những gì chúng tôi lưu về bạn: hồ sơ đồng ý kèm "
                            "bằng chứng, các lần từ chối, lựa chọn, hoạt động và các quyết "
                            "định gần đây.",
        "download": "Tải dữ liệu của tôi",
        "erase": "Xóa tôi",
        "erase_explain": "Xóa những gì chúng tôi lưu về bạn. Bạn sẽ được hỏi để xác nhận.",
        "erase_title": "Xóa dữ liệu của bạn?",
        "erase_confirm": "Thao tác này xóa hồ sơ đồng ý, lựa chọn, hoạt động và lịch sử mà "
                         "chúng tôi lưu cho {address}. Không thể hoàn tác. Hãy tải dữ liệu "
                         "trước nếu bạn muốn giữ một bản.",
        "erase_yes": "Có, xóa dữ liệu của tôi",
        "cancel": "Không, quay lại",
        "erased_title": "Dữ liệu của bạn đã được xóa",
        "erased": "Chúng tôi đã xóa hồ sơ đồng ý, các lần từ chối, lựa chọn, hoạt động, lịch "
                  "sử gửi và lịch sử quyết định của bạn.",
        "kept": "Chúng tôi chỉ giữ lại một thứ: một mã một chiều tạo từ địa chỉ của bạn bằng "
                "khóa bí mật. Mã này không thể chuyển ngược lại thành địa chỉ; nó chỉ giúp "
                "chúng tôi nhận ra địa chỉ để không bao giờ gửi email tiếp thị đến đó nữa. Các "
                "mục về email đã gửi trong nhật ký chung được giữ đến khi hết hạn, làm hồ sơ "
                "về những gì đã gửi, và các email đang chờ sẽ bị hủy.",
        "gone": "Không còn gì để hiển thị: dữ liệu của địa chỉ này đã bị xóa. Chỉ còn mã một "
                "chiều giúp ngừng email tiếp thị của chúng tôi.",
        "none": "Chúng tôi không gửi email tiếp thị nào đến {address}: bạn chưa tham gia "
                "danh sách nào của chúng tôi.",
        "rejoin_explain": "Bạn đổi ý? Đăng ký lại là do bạn quyết định: chúng tôi ghi nhận "
                          "việc này, với trang này làm bằng chứng cho sự đồng ý của bạn.",
        "rejoin": "Đăng ký lại",
        "rejoined": "Đã đăng ký lại. Áp dụng từ email tiếp theo.",
        "view": "Xem dữ liệu của tôi",
        "saved": "Đã lưu. Áp dụng từ email tiếp theo.",
        "form_title": "Vui lòng thử lại",
        "form": "Biểu mẫu này đã quá cũ hoặc không đến từ trang này. Chưa có gì thay đổi.",
        "back": "Quay lại lựa chọn của bạn",
    },
    "ar": {
        "title": "اختياراتك للبريد الإلكتروني",
        "intro": "اختر ما نرسله إلى {address}. يسري كل تغيير بدءًا من الرسالة التالية، بما "
                 "في ذلك الرسائل التي تنتظر الإرسال.",
        "streams": "ما تتلقاه",
        "refused": "لقد ألغيت اشتراكك في هذا",
        "frequency": "عدد المرات",
        "as_sent": "كما نرسلها",
        "weekly": "رسالة واحدة في الأسبوع على الأكثر",
        "monthly": "رسالة واحدة في الشهر على الأكثر",
        "save": "حفظ اختياراتي",
        "pause": "خذ استراحة",
        "pause30": "إيقاف مؤقت لمدة 30 يومًا",
        "pause90": "إيقاف مؤقت لمدة 90 يومًا",
        "paused": "متوقف مؤقتًا حتى {date}.",
        "resume": "الاستئناف الآن",
        "leave_heading": "مغادرة كل شيء",
        "leave_explain": "أوقف جميع رسائلنا التسويقية بنقرة واحدة.",
        "leave": "مغادرة كل شيء",
        "left": "لقد غادرت جميع رسائلنا التسويقية في {date}.",
        "data": "بياناتك",
        "download_explain": "ملف JSON بما نحتفظ به عنك: سجلات الموافقة مع إثباتها، وحالات "
                            "الرفض، والاختيارات، والنشاط، والقرارات الأخيرة.",
        "download": "تنزيل بياناتي",
        "erase": "امسحني",
        "erase_explain": "احذف ما نحتفظ به عنك. سيُطلب منك التأكيد.",
        "erase_title": "هل تريد مسح بياناتك؟",
        "erase_confirm": "سيؤدي هذا إلى حذف سجلات الموافقة والاختيارات والنشاط والسجل الذي "
                         "نحتفظ به لـ {address}. لا يمكن التراجع عن ذلك. نزّل بياناتك أولًا "
                         "إذا أردت نسخة منها.",
        "erase_yes": "نعم، امسح بياناتي",
        "cancel": "لا، ارجع",
        "erased_title": "تم مسح بياناتك",
        "erased": "حذفنا سجلات الموافقة وحالات الرفض والاختيارات والنشاط وسجل الإرسال وسجل "
                  "القرارات الخاصة بك.",
        "kept": "احتفظنا بشيء واحد: رمز أحادي الاتجاه مصنوع من عنوانك بمفتاح سري. لا يمكن "
                "تحويله مرة أخرى إلى عنوانك؛ إنه يتيح لنا فقط التعرف على العنوان حتى لا نرسل "
                "إليه رسائل تسويقية مرة أخرى أبدًا. تبقى الإدخالات الخاصة بالرسائل السابقة في "
                "سجل البريد العام حتى تنتهي صلاحيتها، بوصفها سجلًا لما أُرسل، وتُلغى الرسائل "
                "التي تنتظر الإرسال.",
        "gone": "لم يعد هناك ما يُعرض: مُسحت بيانات هذا العنوان. لم يبقَ إلا الرمز أحادي "
                "الاتجاه الذي يوقف رسائلنا التسويقية.",
        "none": "لا نرسل أي رسائل تسويقية إلى {address}: لم تنضم إلى أي من قوائمنا.",
        "rejoin_explain": "هل غيّرت رأيك؟ الاشتراك من جديد قرارك: نسجّله، وتكون هذه الصفحة "
                          "إثباتًا لموافقتك.",
        "rejoin": "الاشتراك من جديد",
        "rejoined": "تم الاشتراك من جديد. يسري هذا بدءًا من الرسالة التالية.",
        "view": "عرض بياناتي",
        "saved": "تم الحفظ. يسري هذا بدءًا من الرسالة التالية.",
        "form_title": "يرجى المحاولة مرة أخرى",
        "form": "هذا النموذج قديم جدًا أو لم يأتِ من هذه الصفحة. لم يتغير شيء.",
        "back": "العودة إلى اختياراتك",
    },
    "th": {
        "title": "ตัวเลือกอีเมลของคุณ",
        "intro": "เลือกสิ่งที่เราส่งถึง {address} ทุกการเปลี่ยนแปลงมีผลตั้งแต่อีเมลฉบับถัดไป "
                 "รวมถึงอีเมลที่รอส่งอยู่",
        "streams": "สิ่งที่คุณได้รับ",
        "refused": "คุณยกเลิกการรับรายการนี้แล้ว",
        "frequency": "ความถี่",
        "as_sent": "ตามที่เราส่ง",
        "weekly": "ไม่เกินสัปดาห์ละหนึ่งฉบับ",
        "monthly": "ไม่เกินเดือนละหนึ่งฉบับ",
        "save": "บันทึกตัวเลือก",
        "pause": "หยุดพักชั่วคราว",
        "pause30": "หยุดชั่วคราว 30 วัน",
        "pause90": "หยุดชั่วคราว 90 วัน",
        "paused": "หยุดชั่วคราวถึง {date}",
        "resume": "รับต่อทันที",
        "leave_heading": "ออกจากทั้งหมด",
        "leave_explain": "หยุดอีเมลการตลาดทั้งหมดของเราด้วยคลิกเดียว",
        "leave": "ออกจากทั้งหมด",
        "left": "คุณออกจากอีเมลการตลาดทั้งหมดของเราเมื่อ {date}",
        "data": "ข้อมูลของคุณ",
        "download_explain": "ไฟล์ JSON ที่มีสิ่งที่เราเก็บเกี่ยวกับคุณ: บันทึกความยินยอมพร้อม"
                            "หลักฐาน การปฏิเสธ ตัวเลือก กิจกรรม และการตัดสินใจล่าสุด",
        "download": "ดาวน์โหลดข้อมูลของฉัน",
        "erase": "ลบข้อมูลของฉัน",
        "erase_explain": "ลบสิ่งที่เราเก็บเกี่ยวกับคุณ ระบบจะขอให้คุณยืนยัน",
        "erase_title": "ลบข้อมูลของคุณหรือไม่?",
        "erase_confirm": "การดำเนินการนี้จะลบบันทึกความยินยอม ตัวเลือก กิจกรรม และประวัติที่เรา"
                         "เก็บไว้สำหรับ {address} และไม่สามารถย้อนกลับได้ "
                         "โปรดดาวน์โหลดข้อมูลก่อนหากต้องการเก็บสำเนา",
        "erase_yes": "ใช่ ลบข้อมูลของฉัน",
        "cancel": "ไม่ กลับไป",
        "erased_title": "ลบข้อมูลของคุณแล้ว",
        "erased": "เราได้ลบบันทึกความยินยอม การปฏิเสธ ตัวเลือก กิจกรรม ประวัติการส่ง "
                  "และประวัติการตัดสินใจของคุณแล้ว",
        "kept": "เราเก็บไว้เพียงสิ่งเดียว: รหัสทางเดียวที่สร้างจากที่อยู่ของคุณด้วยกุญแจลับ "
                "ซึ่งแปลงกลับเป็นที่อยู่ของคุณไม่ได้ ใช้เพียงเพื่อจดจำที่อยู่นี้ "
                "เพื่อที่เราจะไม่ส่งอีเมลการตลาดถึงอีกเลย รายการเกี่ยวกับอีเมลที่ส่งไปแล้วในบันทึก"
                "อีเมลทั่วไปจะเก็บไว้จนหมดอายุ เป็นหลักฐานของสิ่งที่ส่งไป "
                "และอีเมลที่รอส่งอยู่จะถูกยกเลิก",
        "gone": "ไม่มีอะไรให้แสดงแล้ว: ข้อมูลของที่อยู่นี้ถูกลบแล้ว "
                "เหลือเพียงรหัสทางเดียวที่หยุดอีเมลการตลาดของเรา",
        "none": "เราไม่ได้ส่งอีเมลการตลาดถึง {address}: คุณยังไม่ได้เข้าร่วมรายการใดของเรา",
        "rejoin_explain": "เปลี่ยนใจหรือไม่? การสมัครรับอีกครั้งเป็นการตัดสินใจของคุณ: "
                          "เราจะบันทึกไว้ โดยใช้หน้านี้เป็นหลักฐานความยินยอมของคุณ",
        "rejoin": "สมัครรับอีกครั้ง",
        "rejoined": "สมัครรับอีกครั้งแล้ว มีผลตั้งแต่อีเมลฉบับถัดไป",
        "view": "ดูข้อมูลของฉัน",
        "saved": "บันทึกแล้ว มีผลตั้งแต่อีเมลฉบับถัดไป",
        "form_title": "โปรดลองอีกครั้ง",
        "form": "แบบฟอร์มนี้เก่าเกินไปหรือไม่ได้มาจากหน้านี้ ยังไม่มีการเปลี่ยนแปลงใด ๆ",
        "back": "กลับไปที่ตัวเลือกของคุณ",
    },
}
