"""Where the running `heed serve` keeps its config, so `heed consent …` works from any directory."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def record_file(env: Mapping[str, str]) -> Path:
    """$XDG_STATE_HOME/heed/serving.json (~/.local/state by default): per user, not per cwd."""
    base = env.get("XDG_STATE_HOME")
    if not base:
        try:
            base = str(Path.home() / ".local" / "state")
        except (RuntimeError, KeyError):  # a service user with no home: nowhere to note it
            raise OSError("no home directory") from None
    return Path(base) / "heed" / "serving.json"


def remember(env: Mapping[str, str], *, config: Path | None, data_dir: Path,
             policies: Path) -> None:
    """Note what this serve runs on; a home that cannot be written only loses the convenience."""
    record = {"pid": os.getpid(), "config": str(config.resolve()) if config else None,
              "data_dir": str(data_dir.resolve()), "policies": str(policies.resolve())}
    with contextlib.suppress(OSError):
        path = record_file(env)
        path.parent.mkdir(parents=True, exist_ok=True)
        spare = path.with_suffix(f".{os.getpid()}")
        spare.write_text(json.dumps(record))
        spare.replace(path)


def forget(env: Mapping[str, str]) -> None:
    if (running(env) or {}).get("pid") == os.getpid():
        with contextlib.suppress(OSError):
            record_file(env).unlink()


def running(env: Mapping[str, str]) -> dict[str, Any] | None:
    """The record of the `heed serve` that is still running, or None."""
    try:
        record = json.loads(record_file(env).read_text())
        os.kill(int(record["pid"]), 0)  # still alive (a stale record is ignored)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record if isinstance(record, dict) else None
