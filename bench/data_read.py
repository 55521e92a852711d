"""CPU per message of reading DATA: aiosmtpd's line-at-a-time loop against heed's bulk read.

    python -m bench.data_read [--rounds 4]

Both read the same message from a real asyncio StreamReader (the line loop as
tests/test_smtp_data.py restates aiosmtpd 1.4's, without its per-line debug log call),
alternated round by round: the smtp-source message of bench.cpu (4 kB, 57 lines) and a
60 kB quoted-printable newsletter body (800 lines).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.test_smtp_data import in_bulk, line_at_a_time  # noqa: E402

LIMIT = 65536
SMALL = (b"From: <a@b.example>\r\nTo: <c@d.example>\r\nMessage-Id: <1@b.example>\r\n\r\n"
         + b"".join(b"%d" % i + b"X" * (79 - len(b"%d" % i)) + b"\r\n" for i in range(1, 53))
         + b".\r\nQUIT\r\n")
LARGE = (b"From: <a@b.example>\r\n\r\n"
         + b"".join(b"=3D" + b"y" * 72 + b"=\r\n" for _ in range(800)) + b".\r\n")


async def per_message(bulk: bool, message: bytes, n: int) -> float:
    """Microseconds of CPU per message over ``n`` reads."""
    start = time.process_time()
    for _ in range(n):
        if bulk:
            await in_bulk([message[i:i + LIMIT] for i in range(0, len(message), LIMIT)],
                          LIMIT, 10_000_000)
        else:
            await line_at_a_time(message, LIMIT, 10_000_000)
    return (time.process_time() - start) / n * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=4)
    a = p.parse_args()
    for name, message, n in (("4 kB, 57 lines", SMALL, 2000), ("60 kB, 800 lines", LARGE, 200)):
        runs: dict[str, list[float]] = {"aiosmtpd line loop": [], "heed bulk read": []}
        for _ in range(a.rounds):
            runs["aiosmtpd line loop"].append(asyncio.run(per_message(False, message, n)))
            runs["heed bulk read"].append(asyncio.run(per_message(True, message, n)))
        for who, values in runs.items():
            print(f"{name:<18} {who:<20} " + " ".join(f"{v:7.0f}" for v in values)
                  + "  µs CPU per message")


if __name__ == "__main__":
    main()
