"""Latency heed adds at a fixed offered rate, heed alone (compare.py runs every target).

    python -m bench.latency [--rate 200] [--seconds 10] [--workers 1] [--relay]
                            [--appendfsync always|everysec|no ...]

The same client as compare.py (20 persistent sessions, one recipient and one message
per transaction, timed from when the message was due to the DATA reply). ``--relay``
measures the aiosmtpd pass-through too, for the added figure. Redis's latency monitor
(stalls of Redis itself of 5 ms or more, e.g. AOF fsync) is printed with it.
``--appendfsync everysec`` shows what the fsync before every reply costs (heed's
embedded Redis runs ``always``: a 250 means the write is on disk).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.compare import (  # noqa: E402
    PlainRelay,
    Sink,
    cleanup_all,
    heed_latency,
    latencies,
    pct,
    timed,
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--relay", action="store_true", help="the aiosmtpd relay too")
    p.add_argument("--appendfsync", choices=["always", "everysec", "no"], action="append",
                   help="run heed with this Redis appendfsync (repeatable; default always)")
    a = p.parse_args()
    runs: dict[str, tuple[list[float], list[str], str]] = {}
    stalls: dict[str, str] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="heed-lat-") as tmp_s:
            tmp = Path(tmp_s)
            if a.relay:
                sink = Sink(tmp)
                relay = PlainRelay(sink.port)
                try:
                    runs[relay.name] = timed(latencies(relay.port, a.rate, a.seconds))
                finally:
                    relay.stop()
                    sink.stop()
            for mode in a.appendfsync or ["always"]:
                name = f"heed, appendfsync {mode}"
                runs[name], stalls[name], _log = heed_latency(tmp, a.rate, a.seconds,
                                                              a.workers, mode)
    finally:
        cleanup_all()
    print(f"{a.rate:.0f} messages/s offered for {a.seconds:.0f} s, 1 recipient, 20 sessions, "
          f"heed workers {a.workers}:")
    for name, (values, errors, busy) in runs.items():
        print(f"  {name:30s} p50 {pct(values, 50):7.2f} ms   p90 {pct(values, 90):7.2f} ms   "
              f"p99 {pct(values, 99):7.2f} ms   max {max(values, default=0) * 1000:7.2f} ms   "
              f"({len(values)} ok, {len(errors)} errors; {busy})")
    for name, events in stalls.items():
        print(f"  Redis latency monitor, {name}: {events}")


if __name__ == "__main__":
    main()
