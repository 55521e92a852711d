"""The copy-building path in process: CPU per copy of what relay_copies does before sending.

    python -m bench.copy_path [--rcpts 5] [--messages 300] [--rounds 3]
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python -m bench.copy_path --key KEY.pem --rcpts 5 --messages 40 --rounds 1

For each message like smtp-source's (4 kB, 52 lines of 80 octets): prepare it, then
per recipient build the copy under the shipped marketing stream (tracked links, footer,
one-click fields, Feedback-ID, RSA-2048 DKIM) with whether its one-click is signed,
take its VERP path and facts, and form its DATA bytes. No sockets, no Redis: the CPU
of those is bench.cpu's. Under callgrind, the "Collected" count minus a run with --messages 0 is the
path's instruction count, which other load on the machine does not change; give both
runs the same ``--key`` (an RSA-2048 PEM, e.g. from ``heed dkim keygen``), since making
a key costs a different number of instructions each time, and ``PYTHONHASHSEED=0``
(string hashing moves the count by a few thousand a copy from run to run). Older code
without ``build_copy`` is run the way relay_copies ran it then (bench/README.md).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from proxy.clock import SystemClock  # noqa: E402
from proxy.dkim import DkimSigner, generate_key  # noqa: E402
from proxy.finish import PreparedMessage, UnsubscribeAndSign, signed_one_click  # noqa: E402
from proxy.message import Message, normalise  # noqa: E402
from proxy.policy import Stream  # noqa: E402
from proxy.policy.loader import load_policies  # noqa: E402
from proxy.relay.transaction import _data_lines  # noqa: E402
from proxy.settings import DkimKey, UnsubscribeKey  # noqa: E402
from proxy.tokens import TokenSigner  # noqa: E402

SENDER = "news@news.example.com"
BODY = b"".join(b"%d" % i + b"X" * (79 - len(b"%d" % i)) + b"\r\n" for i in range(1, 53))


def message(n: int) -> bytes:
    return normalise(b"From: <%s>\r\nTo: <1user@example.org>\r\n"
                     b"Date: Thu, 3 Dec 2026 12:00:00 +0000\r\nMessage-Id: <%d@news.example.com>"
                     b"\r\nSubject: hello %d\r\n\r\n" % (SENDER.encode(), n, n) + BODY)


def build(prepared: PreparedMessage, stream: Stream, rcpt: str) -> bytes:
    """What relay_copies does: the copy and its signed one-click (read from the bytes by
    code before ``build_copy``, so this bench also runs on that code for comparison)."""
    if hasattr(prepared, "build_copy"):
        return prepared.build_copy(stream, rcpt).data
    data = prepared.build(stream, rcpt)
    signed_one_click(data)
    return data


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rcpts", type=int, default=5)
    p.add_argument("--messages", type=int, default=300)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--key", type=Path, default=None,
                   help="RSA private key (PEM) for news.example.com; default: a new one")
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="heed-copy-") as tmp:
        key = a.key or generate_key("news.example.com", "s1", Path(tmp))[0]
        signer = DkimSigner([DkimKey(domain="news.example.com", selector="s1", key_file=key)])
        tokens = TokenSigner([UnsubscribeKey(id="k1", secret=b"k" * 32)], SystemClock(),
                             30 * 86400)
        stream = load_policies(ROOT / "policies").streams["marketing"]
        finisher = UnsubscribeAndSign(tokens, signer, public_url="https://heed.bench",
                                      mailto_domain="heed.bench", bounce_domain="heed.bench")
        for _ in range(a.rounds):
            start = time.process_time()
            for n in range(a.messages):
                prepared = finisher.prepare(Message.parse(message(n)))
                for k in range(a.rcpts):
                    rcpt = f"{n * a.rcpts + k}user@example.org"
                    data = build(prepared, stream, rcpt)
                    prepared.return_path(stream, rcpt, SENDER)
                    prepared.facts(stream)
                    prepared.tool_offer(stream, rcpt)
                    _data_lines(data)
            copies = max(1, a.messages * a.rcpts)
            print(f"{a.messages} messages x {a.rcpts} rcpt: "
                  f"{(time.process_time() - start) * 1000 / copies:.3f} ms CPU per copy")


if __name__ == "__main__":
    main()
