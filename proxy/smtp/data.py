"""DATA read in bulk: the content up to the line ".", un-stuffed, aiosmtpd's limits kept."""

from __future__ import annotations

import asyncio
from typing import Any

# RFC 5321 §4.1.1.4: the data ends with a line holding a single "."; read as if a CRLF
# came before the first line, the end is the first CRLF "." CRLF.
_END = b"\r\n.\r\n"
TOO_LONG = "500 Line too long (see RFC5321 4.5.3.1.6)"  # aiosmtpd's words, RFC 5321 §4.5.3.1.6
TOO_MUCH = "552 Error: Too much mail data"  # aiosmtpd's words, RFC 5321 §4.5.3.1.10


class BulkData(asyncio.StreamReader):
    """A session's reader that can take a whole DATA section at once.

    aiosmtpd reads DATA a line at a time (a coroutine call, a log call and a list append
    per line: about a twentieth of heed's CPU per 4 kB message, more for long ones). Here
    each chunk that arrives is appended and searched for the end; commands pipelined after
    the "." stay in the buffer for the command loop. The answer is the one aiosmtpd gives:
    a line longer than ``line_limit`` octets with its CRLF makes it 500, more than
    ``size_limit`` octets before the "." line 552 (whichever comes first, both sent only
    after the final "."), and data past either is dropped as it arrives.
    """

    async def read_data(self, line_limit: int, size_limit: int | None) -> tuple[bytes, str | None]:
        """(content with the dot-stuffing undone, None), or (b"", the refusal)."""
        me: Any = self  # StreamReader's buffer and waiter, as its own readuntil() uses them
        out = bytearray(b"\r\n")
        line_start = 2  # offset in ``out`` of the line not yet ended
        refusal: str | None = None
        while True:
            if me._exception is not None:
                raise me._exception
            if not me._buffer:
                if me._eof:  # the session's eof_received stops the session first
                    raise asyncio.IncompleteReadError(bytes(out[2:]), None)
                await me._wait_for_data("read_data")
                continue
            searched = max(0, len(out) - 4)
            out += me._buffer
            me._buffer.clear()
            end = out.find(_END, searched)
            if end != -1:
                me._buffer[:0] = out[end + 5:]  # pipelined commands: for the command loop
                del out[end + 2:]  # the CRLF of the last line is the content's
            if refusal is None:
                refusal = _check(out, line_start, line_limit, size_limit, complete=end != -1)
                # The CRLF before line_start is in ``out``: found again if none is newer.
                line_start = out.rfind(b"\r\n", line_start - 2) + 2
            if end != -1:
                me._maybe_resume_transport()
                break
            if refusal is not None and len(out) > 4:
                del out[:-4]  # nothing more is kept: only the tail where the end may begin
            me._maybe_resume_transport()
        if refusal is not None:
            return b"", refusal
        # RFC 5321 §4.5.2: a line that begins with "." had one more "." put in front.
        content = bytes(out).replace(b"\r\n.", b"\r\n")
        return content[2:], None


def _check(out: bytearray, line_start: int, line_limit: int, size_limit: int | None, *,
           complete: bool) -> str | None:
    """The refusal the data so far earns, if any: the first limit passed, in stream order."""
    within_size = not size_limit or len(out) - 2 <= size_limit
    if len(out) - line_start + 2 <= line_limit and within_size:
        return None  # no line since line_start can be too long: nothing to split
    lines = out[line_start:].split(b"\r\n")
    last = lines.pop()  # b"" after the final CRLF, else the line still arriving
    if not complete and len(last) > line_limit:
        lines.append(last)  # already past the limit, as aiosmtpd's reader finds it
    if max(map(len, lines), default=0) + 2 <= line_limit and within_size:
        return None
    # Line by line, as aiosmtpd meets them: a line its reader cannot hold (longer than
    # the limit without its CRLF) is refused as such; any other line is counted first.
    total = line_start - 2
    for line in lines:
        if len(line) > line_limit:
            return TOO_LONG
        total += len(line) + 2
        if size_limit and total > size_limit:
            return TOO_MUCH
        if len(line) + 2 > line_limit:
            return TOO_LONG
    return None
