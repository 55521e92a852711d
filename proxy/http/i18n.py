"""The page texts in English, Vietnamese, Arabic (right to left) and Thai; Accept-Language."""

from __future__ import annotations

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "manage": "Choose what you receive instead, pause, or see your data",
        "title": "Unsubscribe",
        "confirm": "Stop emails from {list} to {address}?",
        "button": "Unsubscribe from {list}",
        "button_all": "Stop all marketing email",
        "all_explain": "The second button stops every marketing email we send you, on every "
                       "list. Emails you need, such as receipts, still arrive.",
        "done_all_title": "You have left all marketing email",
        "done_all": "You will get no more marketing emails at {address}.",
        "explain": "One click is enough. We will not ask anything else.",
        "done_title": "You have been unsubscribed",
        "done": "You will get no more emails from {list} at {address}.",
        "bad_title": "This link does not work",
        "bad": "This link is not valid or has expired, and nothing was changed. To stop our "
               "emails, use the unsubscribe link in a more recent email from us.",
        "later_title": "Please try again",
        "later": "We could not record your request just now. Nothing was changed; "
                 "please try again in a few minutes.",
    },
    "vi": {
        "manage": "Chọn những gì bạn nhận, tạm dừng, hoặc xem dữ liệu của bạn",
        "title": "Hủy đăng ký",
        "confirm": "Ngừng gửi email từ {list} đến {address}?",
        "button": "Hủy đăng ký {list}",
        "button_all": "Ngừng mọi email tiếp thị",
        "all_explain": "Nút thứ hai ngừng mọi email tiếp thị chúng tôi gửi bạn, ở mọi danh "
                       "sách. Các email cần thiết, như biên nhận, vẫn được gửi.",
        "done_all_title": "Bạn đã ngừng nhận mọi email tiếp thị",
        "done_all": "Bạn sẽ không nhận thêm email tiếp thị nào tại {address}.",
        "explain": "Chỉ cần một lần nhấp. Chúng tôi sẽ không hỏi thêm gì.",
        "done_title": "Bạn đã hủy đăng ký",
        "done": "Bạn sẽ không nhận thêm email nào từ {list} tại {address}.",
        "bad_title": "Liên kết này không hoạt động",
        "bad": "Liên kết này không hợp lệ hoặc đã hết hạn, và chưa có gì thay đổi. Để ngừng nhận "
               "email của chúng tôi, hãy dùng liên kết hủy đăng ký trong một email gần đây hơn.",
        "later_title": "Vui lòng thử lại",
        "later": "Chúng tôi chưa thể ghi nhận yêu cầu của bạn lúc này. Chưa có gì thay đổi; "
                 "vui lòng thử lại sau vài phút.",
    },
    "ar": {
        "manage": "اختر ما تتلقاه بدلًا من ذلك، أو أوقف مؤقتًا، أو اطّلع على بياناتك",
        "title": "إلغاء الاشتراك",
        "confirm": "هل تريد إيقاف رسائل {list} إلى {address}؟",
        "button": "إلغاء الاشتراك في {list}",
        "button_all": "إيقاف كل الرسائل التسويقية",
        "all_explain": "الزر الثاني يوقف كل الرسائل التسويقية التي نرسلها إليك، في كل القوائم. "
                       "ستظل الرسائل الضرورية، مثل الإيصالات، تصلك.",
        "done_all_title": "أوقفت كل الرسائل التسويقية",
        "done_all": "لن تصلك رسائل تسويقية أخرى على {address}.",
        "explain": "نقرة واحدة تكفي. لن نسألك أي شيء آخر.",
        "done_title": "تم إلغاء اشتراكك",
        "done": "لن تصلك رسائل أخرى من {list} على {address}.",
        "bad_title": "هذا الرابط لا يعمل",
        "bad": "هذا الرابط غير صالح أو انتهت صلاحيته، ولم يتغير شيء. لإيقاف رسائلنا، استخدم "
               "رابط إلغاء الاشتراك في رسالة أحدث منا.",
        "later_title": "يرجى المحاولة مرة أخرى",
        "later": "تعذّر تسجيل طلبك الآن. لم يتغير شيء؛ يرجى المحاولة بعد بضع دقائق.",
    },
    "th": {
        "manage": "เลือกสิ่งที่คุณต้องการรับ หยุดชั่วคราว หรือดูข้อมูลของคุณ",
        "title": "ยกเลิกการรับอีเมล",
        "confirm": "หยุดส่งอีเมลจาก {list} ถึง {address} ใช่หรือไม่?",
        "button": "ยกเลิกการรับ {list}",
        "button_all": "หยุดรับอีเมลการตลาดทั้งหมด",
        "all_explain": "ปุ่มที่สองจะหยุดอีเมลการตลาดทุกฉบับที่เราส่งถึงคุณ จากทุกรายการ "
                       "อีเมลที่จำเป็น เช่น ใบเสร็จ ยังคงส่งถึงคุณ",
        "done_all_title": "คุณหยุดรับอีเมลการตลาดทั้งหมดแล้ว",
        "done_all": "คุณจะไม่ได้รับอีเมลการตลาดที่ {address} อีก",
        "explain": "คลิกเดียวก็พอ เราจะไม่ถามอะไรเพิ่มเติม",
        "done_title": "ยกเลิกการรับอีเมลเรียบร้อยแล้ว",
        "done": "คุณจะไม่ได้รับอีเมลจาก {list} ที่ {address} อีก",
        "bad_title": "ลิงก์นี้ใช้งานไม่ได้",
        "bad": "ลิงก์นี้ไม่ถูกต้องหรือหมดอายุแล้ว และยังไม่มีการเปลี่ยนแปลงใด ๆ "
               "หากต้องการหยุดรับอีเมลจากเรา โปรดใช้ลิงก์ยกเลิกในอีเมลฉบับที่ใหม่กว่า",
        "later_title": "โปรดลองอีกครั้ง",
        "later": "เราไม่สามารถบันทึกคำขอของคุณได้ในขณะนี้ ยังไม่มีการเปลี่ยนแปลงใด ๆ "
                 "โปรดลองอีกครั้งในอีกสักครู่",
    },
}
RTL = frozenset({"ar"})
DEFAULT = "en"


def negotiate(accept_language: str | None) -> str:
    """The best language we have for an Accept-Language header (RFC 9110 §12.5.4, q-values)."""
    best, best_q = DEFAULT, 0.0
    for i, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                continue
        primary = tag.strip().lower().split("-")[0]
        # Earlier entries win ties: subtract a hair per position.
        score = q - i * 1e-6
        if primary in TEXTS and q > 0 and score > best_q:
            best, best_q = primary, score
    return best
