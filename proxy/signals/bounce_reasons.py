"""Why a delivery failed: heed's reasons, read from a diagnostic's words and status code.

Each reason has heed's own name, the name Sisimai (the reference bounce classifier)
gives it, so the audit can be compared with Sisimai's, and whether it refuses the
person. Only a permanent failure of the recipient's address refuses (the address
does not exist, its domain does not, takes no mail, was disabled or has moved);
everything about the sender, the message or the moment (rate limits, blocks of
the sending IP, spam or content filters, size, policy and DMARC, a full mailbox, a
queue timeout, a remote fault) is recorded and counted as a soft bounce.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Reason:
    """One reason: heed's name, Sisimai's name, and whether it is the recipient's own no."""

    name: str
    sisimai: str
    refuses: bool


REASONS = {r.name: r for r in (
    Reason("no-such-user", "userunknown", True),
    Reason("no-such-domain", "hostunknown", True),
    Reason("domain-takes-no-mail", "notaccept", True),  # null MX (RFC 7505); 4xx: soft
    Reason("disabled", "suspend", True),
    Reason("moved", "hasmoved", True),
    Reason("mailbox-full", "mailboxfull", False),
    Reason("too-big", "mesgtoobig", False),
    Reason("over-limit", "exceedlimit", False),
    Reason("rate-limited", "toomanyconn", False),
    Reason("blocked", "blocked", False),  # the sending IP or host
    Reason("spam", "spamdetected", False),
    Reason("virus", "virusdetected", False),
    Reason("policy", "policyviolation", False),  # DMARC, organisation rules
    Reason("security", "securityerror", False),  # authentication, TLS, 5.7.x
    Reason("sender-refused", "rejected", False),  # the envelope sender
    Reason("filtered", "filtered", False),  # the recipient's own filters
    Reason("relay-denied", "norelaying", False),
    Reason("content", "contenterror", False),
    Reason("syntax", "syntaxerror", False),
    Reason("expired", "expired", False),  # gave up after retrying (4.4.7)
    Reason("network", "networkerror", False),
    Reason("remote-fault", "systemerror", False),
    Reason("remote-full", "systemfull", False),
    Reason("mailer", "mailererror", False),
    Reason("unknown", "undefined", False),
)}

_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)")
_REPLY = re.compile(r"(?<![\d.])([245])[0-5]\d(?=[ -]|$)")

# Heed's reading of what mail servers say, most specific first: a full mailbox or a
# spam block quoted next to "5.1.1" is still a full mailbox or a spam block.
_PHRASES: tuple[tuple[str, str], ...] = (
    ("mailbox-full", r"mailbox (is )?full|full mailbox|over (the |disk )?quota|quota "
     r"(exceeded|violation)|exceed(s|ed|ing)? (the |its |their )?(mailbox |storage |disk )?"
     r"(quota|storage)|insufficient (disk )?space|not enough (storage )?space|mailbox "
     r"(size limit|has exceeded|exceeded)|mailfolder is full|disk quota|too much mail data|"
     r"user'?s space has been used up|boite du destinataire pleine|mail quota|quota "
     r"usage exceeded|mailbox would exceed|account is full|exceeding receiving limits"),
    ("too-big", r"message (is )?too (big|large)|message size exceeds|size limit|"
     r"message length exceeds|message file too big|exceeds? (the )?maximum "
     r"(inbound )?(message )?size|max(imum)? message size|taille limite"),
    ("over-limit", r"header size exceeds"),
    ("disabled", r"is (currently )?suspended|has been suspended|user suspended|mailbox "
     r"(is )?(currently )?(suspended|disabled|frozen|inactive|locked)|account (has been |is )"
     r"?(disabled|deactivated|inactive|locked|discontinued)|is disabled|deactivated mailbox|"
     r"temporar(y|ily) (locked|inactive)|invalid/inactive user|boite du destinataire "
     r"archivee|recipient suspend|no longer (active|in use)|inactive (user|account|mailbox)|"
     r"mailbox unavailable or access denied|account is locked"),
    ("moved", r"has been replaced by|mailbox has moved|has moved|no longer (at|with) "),
    ("relay-denied", r"relay(ing)? (access )?(denied|not permitted)|not permitted to relay|"
     r"unable to relay|not allowed to relay|as a relay|open relay|"
     r"relaying mail to|we don'?t handle mail for|not a gateway|allowed rcpthost"),
    ("spam", r"\bspam(?!haus)|unsolicited|bulk (e-?mail|mail)|junk mail|content filter|"
     r"blacklisted url|message (content )?(rejected|refused|filtered)|"
     r"rejected (due to|because of) (suspected )?(spam|unacceptable content)|"
     r"considered (as )?(spam|junk)|mail content denied|high probability of"),
    ("rate-limited", r"rate limit|too many (connections|concurrent|messages|recipients|"
     r"smtp sessions|errors|mails)|frequency limit|sending rate|throttl|max emails per|"
     r"maximum connection limit|per-domain connection limit|try again later|"
     r"exceeded the (rate|limit)|temporarily deferred|trop de connexions|"
     r"numerous attempts|receiving mail at a rate|connection limit|\bip frequency"),
    ("virus", r"virus|malware|infected"),
    ("policy", r"dmarc|policy (violation|reasons)|denied by policy|local policy|"
     r"organi[sz]ation(al)? (policy|settings)|illegal attachment|members-only|"
     r"not subscribed to this group|header error|protocol violation|closed mailing list|"
     r"not accepting mail with|multiple addresses"),
    ("sender-refused", r"sender (address )?(rejected|denied|verify failed|invalid|"
     r"blacklisted|not allowed)|invalid sender|bogus mail from|null sender|empty envelope "
     r"sender|domain of sender address|batv|mail from not owned|sender domain|"
     r"address is not verified|administrative prohibition|senderfilterconfig|"
     r"emetteur invalide|no third-party dsns|returned mail not accepted|"
     r"fully qualified email address required"),
    ("blocked", r"block(ed|list)|blacklist|\brbl|dnsbl|spamhaus|barracuda|"
     r"reverse dns|\bptr\b|client host|helo|ehlo|poor reputation|bad reputation|"
     r"reputation|refused to talk|not authori[sz]ed to send|access denied|"
     r"ip address .* (rejected|refused)|connection (refused|reset|dropped)|go away|"
     r"please use the smtp server of your isp|dynamic ip|dial-?up|residential|"
     r"too many errors|banned|not allowed to send|denied by|confirm this mail server"),
    ("filtered", r"user reject|recipient preferences|rejected due to user rules|only "
     r"accepting mail from|blocked by the recipient|is not accepting any mail|"
     r"this account is protected|refuse to receive|restricted sms|"
     r"extended inactivity"),
    ("no-such-domain", r"host (or domain name )?(unknown|not found)|domain (does not|"
     r"doesn'?t) exist|unknown (host|domain)|no such domain|unroute?able (address|mail "
     r"domain)|domain (is not reachable|must exist)|name or service not known|"
     r"mail domain mentioned in email address is unknown|unrouteable|"
     r"domain not found|does not exist:? ?domain|nxdomain"),
    ("domain-takes-no-mail", r"does not accept mail|accepts no mail|null ?mx|no mx record|"
     r"host not found\b.*name server|no route for current request|"
     r"smtp protocol returned a permanent error"),
    ("no-such-user", r"user(name)? (unknown|not found|not listed|does not exist|doesn'?t "
     r"exist|invalid)|unknown (user|recipient|address|mailbox|local)|no such (user|"
     r"mailbox|recipient|address|person|account)|(address|mailbox|recipient|user|account|"
     r"e-?mail address|addressee|rcpt) (does not|doesn'?t|did not) exist|"
     r"(invalid|bad|unknown|non-?existent) (recipient|mailbox|user|address|destination|"
     r"account|e-?mail)|not (a )?(valid|known) (user|recipient|mailbox|address)|"
     r"recipient (rejected|not found|unknown|invalid|address rejected)|"
     r"(mailbox|recipient|user|address) (not (found|present|exist)|unavailable|"
     r"is unavailable|invalid)|not listed in (domino )?(public )?(name |address )?"
     r"directory|name is not recognized|unknown recipient|no (mailbox|account) (here |by "
     r"that name|found)|is not a valid|not our customer|has no (mailbox|account)|"
     r"does not have an account|not found in|isn'?t (a )?(valid|known)|address "
     r"(invalid|rejected|unknown)|no valid recipients|not have a mailbox|"
     r"could not be found|cannot be found|was not found|unknown or illegal alias|"
     r"non existent|addressee unknown|mailbox not available|nicht gefunden|"
     r"no existe|(no|unknown) user\b|dest(ination)? .*unknown|is not a known user|"
     r"user (account )?(is )?(unavailable|disabled)|not a local address|"
     r"address (is )?no longer valid|email address .*not (valid|exist)"),
    ("expired", r"expired|timed? ?out|retry time|delivery (time|attempts)|too long|"
     r"giving up|gave up|have been failing|has been delayed|could not be delivered for|"
     r"queue|not been collected|server did not respond|unable to deliver message after"),
    ("network", r"no route to host|host is unreachable|hop count|mail loop|routing loop|"
     r"forwarding loop|too many hops|message looping|name server|dns|host name lookup|"
     r"could not connect|unable to connect|network"),
    ("remote-full", r"system (is )?full|insufficient system storage|out of (disk )?space"),
    ("remote-fault", r"service (currently )?unavailable|system (config(uration)?|"
     r"error)|configuration error|internal (server )?error|local error|transaction "
     r"failed|loops back to myself|interrupted|temporary (local )?(problem|failure)|"
     r"try again|misconfigured|loop was found|mail system|server error"),
    ("content", r"content|mime|encoding|charset|8bit|8-bit|non-ascii|"
     r"line too long|bare lf"),
    ("security", r"authenticat|\btls\b|starttls|encryption|certificate|\bspf\b|\bdkim\b|"
     r"verification failure|not authorized"),
    ("syntax", r"syntax error|command unrecognized|unrecognized command|bad sequence"),
)
# Phrases that say exactly what happened even when other words around them (a
# "blacklisted" in a list of maybes, a "try again") would read otherwise.
_FIRST: tuple[tuple[str, str], ...] = (
    ("network", r"host not found, try again"),
    ("no-such-domain", r"account or domain may not exist|\b553 [^ ]+ does not exist"),
    ("domain-takes-no-mail", r"indicated no smtp service"),
    ("disabled", r"recipient account is blocked|compte du destinataire est bloque"),
    ("no-such-user", r"recipient address rejected: (access denied|user unknown|"
     r"unknown user|invalid user)|invalid final delivery userid|invalid recipient|"
     r"doesn'?t have an? [^ ]+ account|unable to deliver message to <|"
     r"見つかりません|リストにありません"),
)
_MATCHERS = tuple((name, re.compile(pattern)) for name, pattern in _FIRST + _PHRASES)

# RFC 3463 enhanced status codes, by subject.detail, where they name a reason.
_CODES = {
    "1.0": "no-such-user", "1.1": "no-such-user", "1.2": "no-such-domain",
    "1.3": "no-such-user", "1.4": "filtered", "1.6": "moved", "1.7": "sender-refused",
    "1.8": "sender-refused", "1.9": "remote-fault", "1.10": "domain-takes-no-mail",
    "2.0": "filtered", "2.1": "filtered", "2.2": "mailbox-full", "2.3": "over-limit",
    "2.4": "filtered", "3.0": "remote-fault", "3.1": "remote-full",
    "3.2": "domain-takes-no-mail", "3.3": "remote-fault", "3.4": "too-big",
    "3.5": "remote-fault", "4.0": "network", "4.1": "expired", "4.2": "network",
    "4.3": "remote-fault", "4.4": "no-such-domain", "4.5": "remote-full", "4.6": "network",
    "4.7": "expired", "5.3": "rate-limited", "5.4": "remote-fault", "5.5": "remote-fault",
    "7.1": "security", "7.13": "disabled", "7.17": "moved", "7.18": "moved",
    "7.25": "blocked", "7.27": "domain-takes-no-mail",
}


def status_of(text: str) -> str:
    """The first RFC 3463 enhanced status code in a text, or ""."""
    found = _STATUS.search(text)
    return found.group(0) if found else ""


def reply_of(text: str) -> str:
    """The first SMTP reply code (RFC 5321 §4.2) in a text, or ""."""
    found = _REPLY.search(text)
    return found.group(0) if found else ""


_COMMANDS = (("DATA", re.compile(r"end of data|(after|reply to|command) data\b|>>> data|"
                                 r"data command|after data")),
             ("RCPT", re.compile(r"rcpt[ _]to|>>> rcpt|recipient command|rcpt command")),
             ("MAIL", re.compile(r"(after|reply to|>>>) mail from|mail from command")),
             ("CONN", re.compile(r"(after|reply to) (connect|helo|ehlo|initial greeting)|"
                                 r">>> (helo|ehlo)")))


def command_of(text: str) -> str:
    """The SMTP command a failure answered (RCPT, DATA, MAIL, CONN), or "" when unsaid."""
    lowered = " ".join(text.lower().split())
    best, where = "", -1
    for name, pattern in _COMMANDS:
        for found in pattern.finditer(lowered):
            if found.start() > where:
                best, where = name, found.start()
    return best


def by_words(text: str) -> str | None:
    """The reason a diagnostic's words give, or None."""
    lowered = " ".join(text.lower().split())
    for name, pattern in _MATCHERS:
        if pattern.search(lowered):
            return name
    return None


def by_status(status: str) -> str | None:
    """The reason an enhanced status code gives, or None (x.0.0 and the like say little)."""
    found = _STATUS.search(status)
    if not found:
        return None
    _, subject, detail = found.groups()
    if subject == "6":
        return "content"
    if subject == "7":
        return _CODES.get(f"7.{detail}", "security")
    return _CODES.get(f"{subject}.{detail}")


def classify(text: str, status: str = "") -> Reason:
    """The reason for one failure: the words first, then the status code, then unknown."""
    status = status or status_of(text)
    name = by_words(text) or by_status(status) or "unknown"
    return REASONS[name]


def permanent(status: str, text: str) -> bool | None:
    """True for a 5xx failure, False for a 4xx one, None when neither code says."""
    code = _STATUS.search(status) or _STATUS.search(text)
    if code:
        return code.group(1) == "5"
    reply = reply_of(text)
    if reply:
        return reply.startswith("5")
    return None


def hard(reason: Reason, status: str, text: str) -> bool:
    """Whether a failure refuses the person: a reason of the recipient's, not a 4xx one."""
    if not reason.refuses:
        return False
    # A 4xx (or "delayed") is a try-again even for a reason of the recipient's.
    return permanent(status, text) is not False
