"""`heed engage import FILE.csv`: bad rows by line, good rows kept, a re-import changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import redis.asyncio as aioredis

from proxy.audit import Audit
from proxy.clock import ManualClock
from proxy.keys import Keys
from proxy.signals.engagement_import import import_engagement
from proxy.state import State
from tests.conftest import ROOT

CSV = """address,kind,time,list
ana@example.org,click,2027-01-10T09:00:00Z,marketing
ana@example.org,click,2027-01-12T09:00:00Z,marketing
ben@example.org,reply,1799000000,
not-an-address,click,2027-01-10T09:00:00Z,marketing
cem@example.org,like,2027-01-10T09:00:00Z,marketing
dan@example.org,click,,marketing
eva@example.org,click,2099-01-01T00:00:00Z,marketing
fay@example.org,machine-click,2027-01-10T09:00:00Z,marketing
gus@example.org,click
"""


async def test_import_keeps_good_rows_and_is_idempotent(aredis: aioredis.Redis, keys: Keys,
                                                       clock: ManualClock,
                                                       tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text(CSV)
    state = State(aredis, keys, clock)
    first = await import_engagement(state, path, clock.now())
    assert (first.imported, first.known) == (3, 0)
    assert [e.split(":")[0] for e in first.errors] == [f"line {n}" for n in range(5, 11)]
    assert "not an email address" in first.errors[0] and "unknown kind 'like'" in first.errors[1]
    assert "time is empty" in first.errors[2] and "in the future" in first.errors[3]
    assert "unknown kind 'machine-click'" in first.errors[4]
    assert "expected 4 columns" in first.errors[5]
    ana = await state.snapshot("ana@example.org")
    assert ana.engagement["click"].at == 1799744400.0  # the later of the two rows
    assert (await state.snapshot("ben@example.org")).engagement["reply"].at == 1799000000.0
    entries = await Audit(aredis, keys).recent("ana@example.org", 10)
    assert entries[0].detail == "click via import (export.csv, marketing)"
    again = await import_engagement(state, path, clock.now())
    assert (again.imported, again.known) == (0, 3)
    assert len(await Audit(aredis, keys).recent("ana@example.org", 10)) == len(entries)


def test_the_command(redis_url: str, tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    # The command runs on the wall clock: the rows' times are in the past for it.
    path.write_text(CSV.replace("2027-01-1", "2025-01-1").replace("1799000000", "1760000000"))
    env = dict(os.environ, PYTHONPATH=str(ROOT))

    def heed(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "proxy", *args, "--redis", redis_url,
                               "--policies", str(ROOT / "policies")], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60)

    done = heed("engage", "import", str(path))
    assert done.returncode == 1  # some rows were bad: said, and the good ones kept
    assert f"{path}:line 5: not an email address" in done.stderr
    assert "imported 3 rows, 0 already known, 6 rejected" in done.stdout
    done = heed("engage", "import", str(path))
    assert "imported 0 rows, 3 already known, 6 rejected" in done.stdout
    assert heed("engage", "import").returncode == 2
