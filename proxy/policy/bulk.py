"""A stream's bulk-sender keys: DKIM required, Feedback-ID, body unsubscribe link."""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from yaml import Node

    from proxy.policy.nodes import PolicyFile

BULK_KEYS = ("unsigned", "feedback_id", "body_unsubscribe", "from_domains")
UNSIGNED = ("hold", "reject", "allow")
BODY_UNSUBSCRIBE = ("check", "insert", "require")
# Per-message values only: Gmail's feedback loop aggregates by these, and a
# per-recipient value would make every copy its own group (and leak who it is).
FEEDBACK_FIELDS = ("campaign", "stream", "list")
_DOMAIN = re.compile(r"(?=.{1,253}\Z)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}\Z")
_FB_TEXT = re.compile(r"[\x21-\x39\x3b-\x7e]+\Z")  # printable, no space, no colon


@dataclass(frozen=True)
class BulkRules:
    """What the mailbox providers require of bulk mail, as one stream applies it."""

    # A marketing copy whose From domain has no DKIM key: held, rejected, or sent anyway.
    unsigned: str = "hold"
    # Feedback-ID template (Gmail's "a:b:c:SenderId"); "" adds none.
    feedback_id: str = ""
    # The body's visible unsubscribe link: only counted, a footer added, or mail held without.
    body_unsubscribe: str = "check"
    # The From domains the stream sends from, besides the `sender: "*@domain"` classify rules.
    from_domains: tuple[str, ...] = ()


NOT_MARKETING = BulkRules(unsigned="allow", body_unsubscribe="check")


def feedback_template(value: Any) -> str:
    """A Feedback-ID template: 2 to 4 colon-separated fields, the last the sender id."""
    text = str(value) if isinstance(value, str) else ""
    parts = text.split(":")
    if not 2 <= len(parts) <= 4:
        raise ValueError(f"expected \"campaign:stream:heed:SENDERID\" (2 to 4 fields separated "
                         f"by ':', the last one your sender id), got {value!r}")
    for part in parts:
        names = [n for _, n, _, _ in string.Formatter().parse(part) if n is not None]
        bad = [n for n in names if n not in FEEDBACK_FIELDS]
        if bad:
            raise ValueError(f"unknown field {{{bad[0]}}} (known: "
                             f"{', '.join('{' + n + '}' for n in FEEDBACK_FIELDS)}; nothing "
                             "per recipient)")
        literal = "".join(t for t, _, _, _ in string.Formatter().parse(part))
        if not names and not _FB_TEXT.match(literal):
            raise ValueError(f"field {part!r} must be printable text without spaces or ':'")
    if "{" in parts[-1]:
        raise ValueError("the last field is your fixed sender id, not a placeholder")
    return text


def _domains(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    out = tuple(str(v).strip().lower().rstrip(".") for v in items)
    bad = [d for d in out if not _DOMAIN.match(d)]
    if bad or not out:
        raise ValueError(f"expected a domain or a list of domains, got {value!r}")
    return out


def read_bulk(f: PolicyFile, items: dict[str, tuple[Node, Node]], marketing: bool,
              bad: object) -> BulkRules:
    """The stream's bulk keys; on a transactional stream only feedback_id and from_domains."""
    got: dict[str, Any] = {}
    for key, read in (
        ("unsigned", lambda n: f.choice(n, "unsigned", UNSIGNED)),
        ("body_unsubscribe", lambda n: f.choice(n, "body_unsubscribe", BODY_UNSUBSCRIBE)),
        ("feedback_id", lambda n: f.convert(n, feedback_template, "feedback_id")),
        ("from_domains", lambda n: f.convert(n, _domains, "from_domains")),
    ):
        if key not in items:
            continue
        if not marketing and key in ("unsigned", "body_unsubscribe"):
            f.err(items[key][0], f"{key} applies to marketing streams only")
            continue
        value = read(items[key][1])
        if value is not bad:
            got[key] = value
    base = BulkRules() if marketing else NOT_MARKETING
    return BulkRules(**{**base.__dict__, **got})

