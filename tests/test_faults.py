"""Faults, small: the soak's scenarios (bench/soak.py) with few messages, counted not timed.

Each runs a real `heed serve` process, a real redis-server (AOF, appendfsync always) and a
real upstream (aiosmtpd, or Postfix's smtp-sink with its fault flags).
"""

from __future__ import annotations

from pathlib import Path

import pytest

import bench.soak as soak


@pytest.mark.parametrize("write_behind", ["", "0"])
def test_kill_9_heed_during_tagged_traffic_loses_nothing(tmp_path: Path,
                                                         write_behind: str) -> None:
    row = soak.heed_kill(tmp_path, messages=200, sessions=4, kills=2, write_behind=write_behind)
    assert row["faults"] == "2 kills"
    assert row["acked"] == 200  # the client retried until every tag got its 250
    assert row["lost"] == 0
    assert row["dup of unretried"] == 0  # a duplicate only where the client had to resend
    # Every copy that arrived has a record, the outcome written behind (the default) or
    # not: its intent ("sending") was in Redis before the upstream's answer was passed on.
    assert row["arrived, no audit record"] == 0


def test_kill_9_redis_with_mail_held_loses_none_and_releases_each_once(tmp_path: Path) -> None:
    # Killed with every copy held (the soak also kills it mid-traffic, where a copy whose
    # 451 raced Redis's fsync is held twice: a duplicate, counted there).
    row = soak.redis_kill(tmp_path, held=40, sessions=4, mid_traffic=False)
    assert row["faults"] == "1 kills"
    assert row["acked"] == 40
    assert row["early"] == 0  # nothing went out while it was to be held
    assert (row["arrived"], row["lost"], row["dup"]) == (40, 0, 0)


def test_redis_paused_or_down_only_451_and_nothing_unchecked(tmp_path: Path) -> None:
    row = soak.redis_pause(tmp_path, transactions=6, sessions=3)
    assert row["451 4.3.0"] == "6/6"
    assert row["acked"] == 0 and row["arrived"] == 0
    assert row["leaky replies"] == 0


def test_upstream_failing_never_gets_a_250_and_held_mail_goes_out_when_back(
        tmp_path: Path) -> None:
    rows = {r["scenario"]: r for r in soak.upstream_faults(tmp_path, messages=8, sessions=4)}
    # A sink that answers DATA only after 30 s: the 354 is a command reply, awaited for
    # upstream.timeout (3 s here); only the reply to the final dot waits data_timeout.
    for name in ("4xx at DATA (-r DATA)", "5xx at RCPT (-f RCPT)", "hangs up after . (-q .)",
                 "hangs at DATA (-W DATA:30)"):
        assert rows[f"upstream {name}"]["acked"] == 0, name  # no 250 the upstream did not give
    slow = rows["upstream slow (-W RCPT:1)"]
    assert (slow["acked"], slow["arrived"], slow["lost"]) == (8, 8, 0)
    back = rows["held mail, upstream 4xx then back"]
    assert back["early"] == 0
    assert (back["acked"], back["arrived"], back["lost"], back["dup"]) == (8, 8, 0, 0)


def test_leak_pattern_catches_what_it_must() -> None:
    assert soak.LEAK.search("4.3.0 ConnectionError at 127.0.0.1:6379")
    assert not soak.LEAK.search("4.3.0 Temporary local problem, please try again later")
