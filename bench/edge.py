"""The SMTP edge alone: CPU per message of heed's session code over loopback, mail path left out.

    python -m bench.edge [--messages 3000] [--sessions 20] [--rcpts 1] [--pipelined]
                         [--rounds 3] [--source DIR …]

heed's session (proxy/smtp/server.py: its reader, command loop, DATA read and checks)
answers clients in the same process over real loopback sockets, in uvloop's event
loop when it is installed (as `heed serve` runs). Each client session
says EHLO once and then sends messages as smtp-source does (MAIL, the RCPTs and DATA,
a reply awaited after each, then a 4 kB message), or with ``--pipelined`` as an
RFC 2920 client does (MAIL, the RCPTs and DATA in one write). The handler answers with
heed's reply strings and does nothing else, so the figure is the edge's own cost (and
the client's, the same for every checkout). ``--source DIR`` runs the edge of another
checkout (e.g. ``git worktree add /tmp/old main``) in a child process, alternated round
by round with this one, for old against new. The instruction count, which other load
does not move (valgrind's callgrind):

    valgrind --tool=callgrind --callgrind-out-file=/tmp/edge.%p python -m bench.edge \\
        --rounds 1 --messages 1000 --one
    callgrind_annotate /tmp/edge.PID | head -3    # "PROGRAM TOTALS"

(``--one`` runs this checkout once in this process, without children.)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(os.environ.get("HEED_BENCH_SOURCE") or Path(__file__).resolve().parent.parent)
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from proxy.settings import SmtpSettings  # noqa: E402
from proxy.smtp.access import Access  # noqa: E402
from proxy.smtp.server import start_smtp  # noqa: E402

# smtp-source's message as bench.cpu sends it: headers and 4 kB of 80-octet lines.
MESSAGE = (b"From: <offers@news.example.com>\r\nTo: <1user@example.org>\r\n"
           b"Date: Thu, 3 Dec 2026 12:00:00 +0000\r\nMessage-Id: <1@news.example.com>\r\n"
           b"Subject: test\r\n\r\n"
           + b"".join(b"%d" % i + b"X" * (78 - len(b"%d" % i)) + b"\r\n" for i in range(51))
           + b".\r\n")


class Replies:
    """heed's replies to MAIL, RCPT and DATA, with nothing behind them."""

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Sender OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Recipient OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        server.stop_data_deadline()
        return "250 2.0.0 Message accepted"


async def _reply(reader: asyncio.StreamReader) -> bytes:
    line = await reader.readline()
    while line[3:4] == b"-":
        line = await reader.readline()
    if line[:1] not in (b"2", b"3"):
        raise RuntimeError(f"unexpected reply {line!r}")
    return line


async def _client(port: int, messages: int, rcpts: int, pipelined: bool, first: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await _reply(reader)
    writer.write(b"EHLO bench.test\r\n")
    await _reply(reader)
    for n in range(first, first + messages):
        commands = [b"MAIL FROM:<offers@news.example.com>\r\n",
                    *(b"RCPT TO:<%duser@example.org>\r\n" % (n * rcpts + i)
                      for i in range(rcpts)), b"DATA\r\n"]
        if pipelined:
            writer.write(b"".join(commands))
            for _ in commands:
                await _reply(reader)
        else:
            for command in commands:
                writer.write(command)
                await _reply(reader)
        writer.write(MESSAGE)
        await _reply(reader)
    writer.write(b"QUIT\r\n")
    await _reply(reader)
    writer.close()
    await writer.wait_closed()


async def per_message(messages: int, sessions: int, rcpts: int, pipelined: bool) -> float:
    """Microseconds of CPU (this process: edge and clients) per message."""
    settings = SmtpSettings(listen=("127.0.0.1", 0), max_sessions=sessions + 10,
                            max_sessions_per_client=sessions + 10)
    server = await start_smtp(Replies(), settings, Access(settings.client_networks, {}))
    port = server.sockets[0].getsockname()[1]
    each = messages // sessions
    start = time.process_time()
    await asyncio.gather(*(_client(port, each, rcpts, pipelined, s * each)
                           for s in range(sessions)))
    spent = time.process_time() - start
    server.close()
    await server.wait_closed()
    return spent / (each * sessions) * 1e6


def _run(main: Any) -> float:
    """In uvloop's loop when it is installed, as `heed serve` runs (proxy/serve.py)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=3000)
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--rcpts", type=int, default=1)
    p.add_argument("--pipelined", action="store_true")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--source", type=Path, action="append", default=[],
                   help="another checkout whose proxy/smtp runs alternated with this one")
    p.add_argument("--one", action="store_true", help="one run of this checkout, in process")
    a = p.parse_args()
    args = ["--messages", str(a.messages), "--sessions", str(a.sessions),
            "--rcpts", str(a.rcpts)] + (["--pipelined"] if a.pipelined else [])
    if a.one:
        print(f"{_run(per_message(a.messages, a.sessions, a.rcpts, a.pipelined)):.1f}")
        return
    here = Path(__file__).resolve().parent.parent
    trees = [here, *(s.resolve() for s in a.source)]
    runs: dict[Path, list[float]] = {t: [] for t in trees}
    for r in range(a.rounds):
        for tree in trees if r % 2 == 0 else trees[::-1]:  # the order turns every round
            env = dict(os.environ, HEED_BENCH_SOURCE=str(tree))
            out = subprocess.run([sys.executable, __file__, "--one", *args], env=env,
                                 capture_output=True, text=True, check=True)
            runs[tree].append(float(out.stdout.split()[-1]))
    mode = "pipelined" if a.pipelined else "one reply awaited per command"
    print(f"{a.messages} messages x {a.rcpts} rcpt, {a.sessions} sessions, {mode}: "
          "µs CPU per message (edge and client), one figure per round")
    for tree, values in runs.items():
        print(f"  {str(tree):<40} " + " ".join(f"{v:7.1f}" for v in values))


if __name__ == "__main__":
    main()
