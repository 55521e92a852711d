"""What the tool's own List-Unsubscribe offered (RFC 2369, RFC 8058), kept per person and list."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from email.utils import getaddresses

from proxy.keys import normalise_address
from proxy.message import Message

# RFC 2369 §2: each URI in angle brackets; RFC 8058 §3.1: the one-click value, exactly.
_URI = re.compile(r"<\s*([^>\s]+)\s*>")
ONE_CLICK = "List-Unsubscribe=One-Click"
MAX_URI = 2048  # longer links are not kept (bounded storage; no real tool needs more)


@dataclass(frozen=True)
class Offer:
    """The tool's own links: an http(s) URL (one-click or not) and a mailto, either may be ""."""

    url: str = ""
    one_click: bool = False
    mailto: str = ""

    def to_json(self, at: float) -> str:
        return json.dumps({"url": self.url, "one_click": self.one_click, "mailto": self.mailto,
                           "at": at})

    @classmethod
    def from_json(cls, text: str) -> tuple[Offer, float] | None:
        """The offer and when it was kept; None for a record that cannot be read."""
        try:
            rec = json.loads(text)
            offer = cls(str(rec.get("url", "")), rec.get("one_click") is True,
                        str(rec.get("mailto", "")))
            return offer, float(rec.get("at", 0))
        except (ValueError, TypeError, AttributeError):
            return None


def read_offer(message: Message) -> Offer | None:
    """The first http(s) and the first mailto URI of the tool's List-Unsubscribe, if any."""
    url = mailto = ""
    for value in message.get_all("List-Unsubscribe"):
        for uri in _URI.findall(value):
            low = uri.lower()
            if len(uri) > MAX_URI:
                continue
            if not url and low.startswith(("https://", "http://")):
                url = uri
            elif not mailto and low.startswith("mailto:"):
                mailto = uri
    if not url and not mailto:
        return None
    posts = [v.strip() for v in message.get_all("List-Unsubscribe-Post")]
    # RFC 8058 §3.1: one-click needs an https URI beside the Post field; §3.2 its value.
    return Offer(url, bool(url) and ONE_CLICK in posts, mailto)


def personal(message: Message, recipient: str) -> bool:
    """Whether the copy was written for ``recipient`` alone: its To names only that address.

    A tool's link names the person it was written for; a message written to several
    people carries one person's link (or a list's), and must never unsubscribe another.
    """
    named = {normalise_address(a) for _, a in getaddresses(message.get_all("To")) if a}
    return named == {normalise_address(recipient)}
