"""DATA read in bulk gives what aiosmtpd's line-at-a-time loop gives: content, refusal, rest."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.smtp.data import TOO_LONG, TOO_MUCH, BulkData


async def line_at_a_time(stream: bytes, line_limit: int, size_limit: int | None
                         ) -> tuple[bytes, str | None, bytes]:
    """aiosmtpd 1.4's smtp_DATA loop (its reader's limit is its line_length_limit)."""
    reader = asyncio.StreamReader(limit=line_limit)
    reader.feed_data(stream)
    reader.feed_eof()
    data: list[bytes] = []
    fragments: list[bytes] = []
    num, state = 0, None
    while True:
        try:
            line = await reader.readuntil(b"\r\n")
        except asyncio.LimitOverrunError as e:
            state = state or TOO_LONG
            data = []
            line = await reader.read(e.consumed)
        if not fragments and line == b".\r\n":
            break
        num += len(line)
        if state is None and size_limit and num > size_limit:
            state, data = TOO_MUCH, []
        fragments.append(line)
        if line.endswith(b"\r\n"):
            if state is None:
                joined = b"".join(fragments)
                if len(joined) > line_limit:
                    state, data = TOO_LONG, []
                else:
                    data.append(joined[1:] if joined.startswith(b".") else joined)
            fragments = []
    rest = await reader.read()
    return (b"", state, rest) if state else (b"".join(data), None, rest)


async def in_bulk(chunks: list[bytes], line_limit: int, size_limit: int | None
                  ) -> tuple[bytes, str | None, bytes]:
    reader = BulkData(limit=line_limit)

    async def feed() -> None:
        for chunk in chunks:
            await asyncio.sleep(0)  # each chunk arrives on its own
            reader.feed_data(chunk)
        reader.feed_eof()

    feeding = asyncio.ensure_future(feed())
    content, refusal = await reader.read_data(line_limit, size_limit)
    await feeding
    return content, refusal, await reader.read()


LINES = st.sampled_from([b"text", b".", b"..", b".x", b"", b"a" * 30, b"b" * 70, b" .",
                         b"\r", b"x\r", b"c" * 38, b"c" * 39, b"c" * 62, b"c" * 63, b"c" * 65])


@settings(max_examples=1500, deadline=None)
@given(st.lists(LINES, max_size=12), st.sampled_from([40, 64, 1000]),
       st.sampled_from([None, 50, 120, 100000]), st.integers(1, 9),
       st.sampled_from([b"", b"QUIT\r\n", b"RSET\r\nMAIL FROM:<a@b>\r\n"]))
def test_same_as_aiosmtpd_line_at_a_time(lines: list[bytes], line_limit: int,
                                         size_limit: int | None, cut: int,
                                         after: bytes) -> None:
    stream = b"".join(line + b"\r\n" for line in lines) + b".\r\n" + after
    chunks = [stream[i:i + cut] for i in range(0, len(stream), cut)]
    want = asyncio.run(line_at_a_time(stream, line_limit, size_limit))
    got = asyncio.run(in_bulk(chunks, line_limit, size_limit))
    assert got == want


def test_a_smuggled_end_is_content() -> None:
    # Only CRLF "." CRLF ends DATA (RFC 5321 §4.1.1.4): LF "." LF stays in the content.
    stream = b"a\r\n\n.\n\r\nMAIL FROM:<x@y>\r\n.\r\n"
    content, refusal, rest = asyncio.run(in_bulk([stream], 1000, None))
    assert (content, refusal, rest) == (b"a\r\n\n.\n\r\nMAIL FROM:<x@y>\r\n", None, b"")


def test_data_past_a_limit_is_not_kept() -> None:
    big = [b"x" * 60 + b"\r\n"] * 2000 + [b".\r\nQUIT\r\n"]
    content, refusal, rest = asyncio.run(in_bulk(big, 1000, 10_000))
    assert (content, refusal, rest) == (b"", TOO_MUCH, b"QUIT\r\n")
