"""The loop watch (proxy/watch/loop.py): a step that holds the loop is seen, with where."""

from __future__ import annotations

import asyncio
import gc
import sys

import pytest

from proxy.errors import ConfigError
from proxy.settings import load_settings
from proxy.watch.loop import LOOK, LoopWatch


async def _until(cond: object) -> None:
    while not cond():  # type: ignore[operator]
        await asyncio.sleep(LOOK)


def _hold(watch: LoopWatch, looks: int) -> None:
    """Hold the loop (no await) until the watch has looked ``looks`` more times."""
    start = watch.looks
    while watch.looks < start + looks:
        sum(range(1000))


async def test_a_step_that_holds_the_loop_is_counted_with_where_it_was() -> None:
    switch = sys.getswitchinterval()
    watch = LoopWatch(threshold=0.0)  # every step counts: the outcome needs no timing
    watch.start()
    try:
        await _until(lambda: watch.looks > 2)
        _hold(watch, 5)
        looks = watch.looks
        await _until(lambda: watch.looks > looks + 2)  # it has looked since the step ended
        gc.collect()
    finally:
        watch.stop()
    assert sys.getswitchinterval() == switch  # handed back as it was
    assert watch.long_steps >= 1 and watch.steps
    assert any("_hold" in s.where for s in watch.steps), watch.summary()
    # Each step is kept with its time too, for a benchmark's window.
    assert any(e.kind == "step" and "_hold" in e.where for e in watch.events)
    assert any(e.kind == "gc" and e.source == "gen2" for e in watch.events)
    assert all(e.line().count(" | ") == 2 for e in watch.events)
    assert watch.gc[2].count >= 1  # gc.collect() is a full collection, timed
    text = watch.summary()
    assert "steps over 0 ms" in text and "gen2" in text and "test_loop_watch.py" in text


async def test_the_watch_stops_looking_and_timing_when_stopped() -> None:
    watch = LoopWatch(threshold=0.005)
    watch.start()
    await _until(lambda: watch.looks > 1)
    watch.stop()
    assert watch._on_gc not in gc.callbacks
    looks = watch.looks
    gc.collect()
    await asyncio.sleep(LOOK * 5)
    assert watch.looks == looks and watch.gc[2].count == 0


def test_loop_watch_ms_is_a_setting_checked_at_start() -> None:
    assert load_settings(env={"HEED_LOOP_WATCH_MS": "5"}).loop_watch_ms == 5.0
    assert load_settings(env={}).loop_watch_ms == 0.0  # off unless asked for
    with pytest.raises(ConfigError, match="'loop_watch_ms' must be a number"):
        load_settings(env={"HEED_LOOP_WATCH_MS": "-1"})
