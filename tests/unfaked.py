"""Redis's own binaries outside libfaketime, for suites run under `faketime` (any hour)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

# redis-server and redis-cli abort under libfaketime's preload (recursive clock_gettime
# in jemalloc's start-up); heed's clock is the one the tests move, not Redis's.
SHIM = Path(__file__).with_name("redis_server_unfaked.sh")


def under_faketime() -> bool:
    return "faketime" in os.environ.get("LD_PRELOAD", "")


def unfaked_env() -> dict[str, str]:
    """The environment without libfaketime's preload, for redis-cli and the like."""
    return {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "FAKETIME")}


def real_now() -> float:
    """The machine's own time, even when this process runs under libfaketime."""
    out = subprocess.run(["date", "+%s.%N"], env=unfaked_env(), capture_output=True, text=True,
                         check=True)
    return float(out.stdout)
