"""bench.latency reads the loop watch's timed events for the load's window alone."""

from __future__ import annotations

from bench.latency import in_window
from proxy.watch.loop import Event


def test_only_events_while_the_load_ran_are_counted_by_source() -> None:
    lines = [
        Event(10.0, "step", 0.040, 0.030, "tell/lifecycle.py lifecycle_pass", "a.py:1 f").line(),
        Event(20.0, "step", 0.012, 0.009, "smtp/server.py smtp_DATA", "dkim.py:9 sign").line(),
        Event(21.0, "step", 0.020, 0.001, "smtp/server.py smtp_DATA", "wire.py:7 write").line(),
        Event(22.0, "late", 0.015, 0.0, "").line(),
        Event(23.0, "gc", 0.006, 0.002, "gen1").line(),
        Event(99.0, "gc", 0.080, 0.070, "gen2").line(),
    ]
    said = in_window(lines, (15.0, 30.0), 5)
    assert "timers late over 5 ms 1 times (latest 15.0 ms)" in said
    # Two steps of the DATA task, one of them over 5 ms of CPU; start-up's pass not counted.
    assert "smtp/server.py smtp_DATA 2 (1 over by CPU, CPU 10 ms in all, up to 9.0 ms)" in said
    assert "lifecycle" not in said and "gen2" not in said
    assert "gen1 1 (0 over by CPU" in said
    assert said.index("cpu 9.0 ms (wall 12.0) at smtp/server.py smtp_DATA: dkim.py:9 sign") > 0
