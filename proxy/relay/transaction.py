"""One mail transaction upstream: MAIL, RCPT and DATA in one write where the server pipelines."""

from __future__ import annotations

import re
from collections.abc import Sequence

from aiosmtplib.email import quote_address
from aiosmtplib.protocol import normalize_message_line_endings

from proxy.errors import UpstreamError
from proxy.relay.wire import Lost, ReplyTimeout, Wire
from proxy.smtp.address import PLAIN_ADDRESS

Refused = dict[str, tuple[int, str]]
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")  # CR, LF or NUL in a path would inject a command


class Stale(Exception):
    """A reused connection failed before MAIL was accepted: nothing was sent."""


class Rejected(Exception):
    """The upstream answered no; the envelope was reset, so the connection is still good."""

    def __init__(self, error: UpstreamError) -> None:
        super().__init__(str(error))
        self.error = error


TIMED_OUT = UpstreamError(421, "4.4.2 upstream timed out", temporary=True)
LOST = UpstreamError(421, "4.4.2 upstream connection lost", temporary=True)


async def transaction(wire: Wire, sender: str, recipients: Sequence[str], data: bytes, *,
                      timeout: float, data_timeout: float) -> Refused:
    """Relay ``data``; the recipients the upstream refused (address -> reply).

    With PIPELINING offered, MAIL, every RCPT and DATA go in one write and the replies
    are read in order (RFC 2920 §3.1); without it, each command waits for its reply.
    Either way each reply maps the same: a refused RCPT is that recipient's, DATA after
    no accepted RCPT is never answered by a message. The 354 is awaited for ``timeout``
    (RFC 5321 §4.5.3.2.5: 2 minutes), only the reply to the final dot for
    ``data_timeout`` (§4.5.3.2.6: 10 minutes)."""
    try:
        return await _transaction(wire, sender, recipients, data, timeout, data_timeout)
    except ReplyTimeout:
        raise TIMED_OUT from None
    except Lost:
        raise LOST from None


async def _transaction(wire: Wire, sender: str, recipients: Sequence[str], data: bytes,
                       timeout: float, data_timeout: float) -> Refused:
    options, encoding = _mail_options(wire, sender, recipients, data)
    try:
        mail = b" ".join([b"MAIL FROM:" + _path(sender, encoding), *options]) + b"\r\n"
    except (ValueError, UnicodeError):
        raise Rejected(UpstreamError(553, "5.1.7 sender address not acceptable",
                                     temporary=False)) from None
    refused: Refused = {}
    rcpts: list[tuple[str, bytes]] = []
    for r in recipients:
        try:
            rcpts.append((r, b"RCPT TO:" + _path(r, encoding) + b"\r\n"))
        except (ValueError, UnicodeError):
            refused[r] = (553, "5.1.3 recipient address not acceptable")
    if not rcpts:  # nothing sent: no envelope to reset
        raise Rejected(UpstreamError(553, "5.1.3 recipient address not acceptable",
                                     temporary=False))

    pipelined = wire.pipelining
    wire.write(mail + b"".join(line for _, line in rcpts) + b"DATA\r\n" if pipelined else mail)
    try:
        code, text = await wire.reply(timeout)
    except Lost:
        raise Stale() from None  # nothing was accepted: a retry cannot duplicate
    if code == 421:  # "closing transmission channel" (RFC 5321 §3.8)
        raise Stale()
    if code != 250:
        if pipelined:  # the RCPTs and DATA were answered too (503): read them first
            try:
                await _skip(wire, len(rcpts) + 1, timeout)
            except (Lost, ReplyTimeout):  # a server may hang up after a refusal:
                wire.close()  # the client still hears that refusal
        raise await _rejected(wire, code, text, timeout)

    for r, line in rcpts:
        if not pipelined:
            wire.write(line)
        code, text = await wire.reply(timeout)
        if code == 421:
            raise UpstreamError(421, text, temporary=True)
        if code not in (250, 251):  # 251: "will forward" (RFC 5321 §3.4)
            refused[r] = (code, text)
    accepted = len(refused) < len(recipients)
    if pipelined or accepted:
        if not pipelined:
            wire.write(b"DATA\r\n")
        try:
            code, text = await wire.reply(timeout)
        except (Lost, ReplyTimeout):
            if accepted:
                raise
            wire.close()  # every recipient was refused: those replies are the answer
            code = 0
    if not accepted:
        if code == 354:
            # RFC 2920 §3.1: DATA should have failed (554/503); end the empty message.
            try:
                await _skip(wire, 0, timeout, end_data=True)
            except (Lost, ReplyTimeout):
                wire.close()
        codes = {c // 100 for c, _ in refused.values()}
        if len(codes) > 1:
            await _reset(wire, timeout)  # some 4xx, some 5xx: each recipient keeps its own
            return refused
        code, text = next(iter(refused.values()))
        raise await _rejected(wire, code, text, timeout)
    if code != 354:
        raise await _rejected(wire, code, text, timeout)

    wire.write(_data_lines(data))
    try:
        code, text = await wire.reply(data_timeout)
    except ReplyTimeout:
        # No reply to the final "." may still mean delivered (RFC 1047);
        # a retry can duplicate, which is better than losing the copy.
        raise TIMED_OUT from None
    if code != 250:
        raise await _rejected(wire, code, text, timeout)
    return refused


def _data_lines(data: bytes) -> bytes:
    """The message as DATA sends it: CRLF lines, dot-stuffed, ended by "." (RFC 5321 §4.5.2).

    heed's copies are CRLF already (proxy/message.py normalises): counting is cheaper
    than the regex, which runs only when the counts disagree."""
    pairs = data.count(b"\r\n")
    if data.count(b"\r") != pairs or data.count(b"\n") != pairs:
        data = normalize_message_line_endings(data)
    elif not data.endswith(b"\r\n"):
        data += b"\r\n"  # RFC 5321 §4.1.1.4: the data ends with CRLF before the final "."
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\r\n.", b"\r\n..") + b".\r\n"


# MAIL and RCPT for a plain mailbox (dot-atom local part, plain domain: nearly every
# path heed relays, VERP return paths included) are written as the path itself;
# aiosmtplib's quote_address (email.utils.parseaddr) costs about a twentieth of heed's
# CPU per message to get the same "<address>" (tests/test_relay.py checks that for any
# plain mailbox); any other path still goes through it. RFC 5321 §4.1.1.2, §4.1.1.3.
def _path(address: str, encoding: str) -> bytes:
    if not address or PLAIN_ADDRESS.fullmatch(address):
        return b"<" + address.encode("ascii") + b">"
    quoted = quote_address(address).encode(encoding)
    if _CONTROL.search(quoted):
        raise ValueError("control character in a path")
    return quoted


def _mail_options(wire: Wire, sender: str, recipients: Sequence[str],
                  data: bytes) -> tuple[list[bytes], str]:
    options: list[bytes] = []
    if wire.supports("size"):
        options.append(b"SIZE=%d" % len(data))  # RFC 1870
    if not data.isascii() and wire.supports("8bitmime"):
        options.append(b"BODY=8BITMIME")  # RFC 6152
    if sender.isascii() and all(r.isascii() for r in recipients):
        return options, "ascii"
    if not wire.supports("smtputf8"):
        # RFC 6531 §3.2: such a copy cannot go to this server at all.
        raise Rejected(UpstreamError(553, "5.6.7 upstream does not accept UTF-8 addresses",
                                     temporary=False))
    options.append(b"SMTPUTF8")
    return options, "utf-8"


async def _skip(wire: Wire, count: int, timeout: float, *, end_data: bool = False) -> None:
    """Read ``count`` replies nobody needs; a 354 among them gets an empty message ended."""
    for _ in range(count):
        code, _text = await wire.reply(timeout)
        end_data = end_data or code == 354
    if end_data:
        wire.write(b".\r\n")
        await wire.reply(timeout)


async def _reset(wire: Wire, timeout: float) -> None:
    """RSET after a refused transaction (RFC 5321 §4.1.1.5); a bad reply ends the connection."""
    try:
        code, _text = await wire.command(b"RSET", timeout)
    except (Lost, ReplyTimeout):
        code = 0
    if code != 250:
        wire.close()


async def _rejected(wire: Wire, code: int, text: str, timeout: float) -> Exception:
    """The failure to raise for a refusal, after resetting the envelope."""
    error = UpstreamError(code, text, temporary=code < 500)
    await _reset(wire, timeout)
    return Rejected(error) if wire.is_connected else error
