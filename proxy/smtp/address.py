"""The common case of a MAIL/RCPT path, parsed without the email package's full parser."""

from __future__ import annotations

import re

# RFC 5321 §4.1.2 Path = "<" Mailbox ">", here only a dot-atom local part and a
# dotted domain of letters, digits and hyphens: what nearly every client sends.
# aiosmtpd hands every path to email._header_value_parser (RFC 5322 with comments,
# quoting, obsolete forms), which costs more than the rest of the command; anything
# this pattern does not match still goes there, so the result is the same. Like
# that parser, the blanks after ">" are not part of the parameters that follow.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_ADDRESS = rf"(?:{_ATEXT}\.)*{_ATEXT}@(?:[A-Za-z0-9-]+\.)*[A-Za-z0-9-]+"
_PLAIN_PATH = re.compile(rf"<({_ADDRESS})>[ \t]*((?:[^ \t(].*)?)", re.DOTALL)
# The same plain mailbox on its own (proxy/relay.py writes such a path as it is).
PLAIN_ADDRESS = re.compile(_ADDRESS)


def plain_path(arg: str, local_part_limit: int = 0) -> tuple[str | None, str | None] | None:
    """(address, rest) as aiosmtpd's ``_getaddr`` gives them, or None to use aiosmtpd's."""
    m = _PLAIN_PATH.fullmatch(arg)
    if m is None:
        return None
    address = m.group(1)
    if local_part_limit and address.rindex("@") > local_part_limit:
        return None, None
    return address, m.group(2)
