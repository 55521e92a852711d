"""Child processes of a benchmark: every one is registered and stopped on any exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent


_cleanups: list[Callable[[], None]] = []


def on_cleanup(fn: Callable[[], None]) -> Callable[[], None]:
    _cleanups.append(fn)
    return fn


def cleanup_all() -> None:
    while _cleanups:
        fn = _cleanups.pop()
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - keep cleaning up the rest
            print(f"cleanup: {exc!r}", file=sys.stderr)


def _stop_group(proc: subprocess.Popen[Any], grace: float = 15.0) -> None:
    """SIGTERM the child (its own process group), then SIGKILL the whole group."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    try:  # anything the child left behind in its group (heed workers, its redis-server)
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


def spawn(args: list[str], **kw: Any) -> tuple[subprocess.Popen[Any], Callable[[], None]]:
    proc = subprocess.Popen(args, start_new_session=True, **kw)
    done = False

    def stop() -> None:
        nonlocal done
        if not done:
            done = True
            _stop_group(proc)
            if stop in _cleanups:
                _cleanups.remove(stop)

    on_cleanup(stop)
    return proc, stop


def raise_interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")



def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out



