"""Resident memory of heed with many SMTP sessions open in the middle of a transaction.

    python -m bench.sessions [--sessions 500] [--workers 1] [--body 2048]

Starts heed as compare.py does (everything on, embedded Redis), reads each worker's
VmRSS from /proc/PID/status idle, then opens ``--sessions`` sessions that each say
EHLO, MAIL, RCPT, DATA and send ``--body`` bytes of the message without ending it,
and reads VmRSS again while they all hold. Then the sessions end the data and the
figure is read once more after every message was delivered. (The per-client
session cap is raised for the run: every session comes from 127.0.0.1.)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.compare import SENDER, Heed, Sink, cleanup_all, descendants  # noqa: E402


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def workers(heed: Heed, n: int) -> list[int]:
    """The heed processes that serve SMTP (the supervisor too when it is the only one)."""
    pids = [p for p in descendants(heed.proc.pid)
            if "redis" not in Path(f"/proc/{p}/comm").read_text()]
    return pids if n > 1 else [heed.proc.pid]


class Session:
    def __init__(self, port: int, n: int) -> None:
        self.port, self.n = port, n

    async def expect(self, code: bytes) -> None:
        while True:
            line = await asyncio.wait_for(self.reader.readline(), 60)
            if not line.startswith(code):
                raise RuntimeError(f"session {self.n}: expected {code!r}, got {line!r}")
            if line[3:4] != b"-":
                return

    async def open(self, body: bytes) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        await self.expect(b"220")
        for cmd, code in ((b"EHLO bench.client", b"250"),
                          (f"MAIL FROM:<{SENDER}>".encode(), b"250"),
                          (f"RCPT TO:<mem{self.n}@example.org>".encode(), b"250"),
                          (b"DATA", b"354")):
            self.writer.write(cmd + b"\r\n")
            await self.expect(code)
        self.writer.write(body)
        await self.writer.drain()

    async def finish(self) -> None:
        self.writer.write(b"\r\n.\r\n")
        await self.expect(b"250")
        self.writer.write(b"QUIT\r\n")
        await self.expect(b"221")
        self.writer.close()


async def hold(port: int, count: int, size: int, pids: list[int]) -> dict[str, list[int]]:
    head = (f"From: <{SENDER}>\r\nTo: <x@example.org>\r\nSubject: memory\r\n"
            "Date: Mon, 23 Nov 2026 12:00:00 +0000\r\n\r\n").encode()
    body = head + (b"x" * 76 + b"\r\n") * max(1, (size - len(head)) // 78)
    sessions = [Session(port, n) for n in range(count)]
    out: dict[str, list[int]] = {}
    # Opened 50 at a time: the figure is for sessions that are open, not a connect storm.
    for i in range(0, count, 50):
        await asyncio.gather(*(s.open(body) for s in sessions[i:i + 50]))
    await asyncio.sleep(2)
    out[f"{count} sessions open, each in DATA with {len(body)} bytes sent"] = [
        rss_kb(p) for p in pids]
    await asyncio.gather(*(s.finish() for s in sessions))
    await asyncio.sleep(2)
    out[f"after the {count} messages were delivered"] = [rss_kb(p) for p in pids]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", type=int, default=500)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--body", type=int, default=2048, help="bytes of DATA sent before holding")
    a = p.parse_args()
    try:
        with tempfile.TemporaryDirectory(prefix="heed-mem-") as tmp_s:
            tmp = Path(tmp_s)
            sink = Sink(tmp)
            heed = Heed(tmp / "heed", sink.port,
                        [f"mem{n}@example.org" for n in range(a.sessions)], a.workers,
                        smtp_options=f", max_sessions_per_client: {a.sessions + 10}")
            time.sleep(1)
            pids = workers(heed, a.workers)
            figures = {"idle, after start": [rss_kb(p) for p in pids]}
            figures.update(asyncio.run(hold(heed.port, a.sessions, a.body, pids)))
            delivered = sink.count()
            heed.stop()
            sink.stop()
    finally:
        cleanup_all()
    print(f"heed resident memory (VmRSS) per worker, {a.workers} worker(s) "
          f"(pids {', '.join(map(str, pids))}):")
    for what, kbs in figures.items():
        print(f"  {what:58s} " + ", ".join(f"{kb / 1024:6.1f} MB" for kb in kbs))
    print(f"  messages delivered at the sink: {delivered} of {a.sessions}")
    if delivered < a.sessions:
        sys.exit(1)


if __name__ == "__main__":
    main()
