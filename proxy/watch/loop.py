"""The event loop's holds and the garbage collector's pauses, with where each happened.

Opt-in (``loop_watch_ms``), for benchmarks and for finding a tail: a reply waits for
whatever holds the loop. Three views, each against the threshold:
- late timers: a timer set every ``BEAT`` that fires late is what any reply due then
  waited (one long step, or many short ones queued, or no core for the process);
- long steps: a thread looks every ``LOOK`` at the main thread's stack; the same
  outermost coroutine (or callback) frame seen from one look to the next, with no timer
  beat between, is one step of one task, which no other reply can interrupt. Its CPU time
  (the main thread's CPU
  clock) tells heed's own work from waiting for a core on a busy machine;
- GC pauses: ``gc.callbacks`` time every collection, per generation.
Each late timer, long step and long GC pause is also kept with its time (``events``, the
first ``KEEP_EVENTS``), so a benchmark can read what held the loop while its load ran,
apart from start-up (bench.latency --watch-ms).
While it watches, the interpreter hands the GIL over every ``LOOK`` (not every 5 ms),
so that the thread sees a step of pure Python to within about that.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

BEAT = 0.002  # seconds between timer beats
LOOK = 0.001  # seconds between two looks at the main thread's stack
KEEP = 8  # longest steps kept, with where
KEEP_EVENTS = 20_000  # timed events kept (late timers, long steps, long GC pauses)
# Frames of the loop's own machinery, below every step (asyncio.run, uvloop.run, serve).
_LOOP_FILES = ("/asyncio/runners.py", "/asyncio/base_events.py", "/uvloop/__init__.py",
               "/proxy/serve.py", "/proxy/__main__.py", "/proxy/cli/", "/runpy.py",
               "/multiprocessing/")


@dataclass(order=True)
class Step:
    seconds: float
    cpu: float = field(compare=False)
    where: str = field(compare=False)


@dataclass(frozen=True)
class Event:
    """One thing that held the loop, at ``at`` (time.time(), when it ended)."""

    at: float
    kind: str  # "late" (a timer beat), "step" or "gc"
    seconds: float
    cpu: float  # the main thread's CPU time in it (0 for a late timer: not measured)
    source: str  # the task or callback ("late": "", "gc": "gen0" … "gen2")
    where: str = ""

    def line(self) -> str:
        return (f"{self.at:.3f} {self.kind} {self.seconds * 1000:.2f} ms cpu "
                f"{self.cpu * 1000:.2f} ms | {self.source} | {self.where}")


@dataclass
class GcPauses:
    count: int = 0
    total: float = 0.0
    longest: float = 0.0
    over: int = 0  # pauses over the threshold
    cpu_longest: float = 0.0  # the main thread's CPU time in the longest-by-CPU pause
    cpu_over: int = 0  # pauses over the threshold in CPU time (not a wait for a core)


class LoopWatch:
    """``start()`` in the running loop; ``summary()`` says what held it; ``stop()`` ends it."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.late = 0  # timer beats late by more than the threshold
        self.latest = 0.0  # the latest of them
        self.steps: list[Step] = []  # the KEEP longest steps over the threshold
        self.long_steps = self.by_work = 0  # steps over it; of those, with CPU over half
        # Per task or callback (its outermost heed frame): steps over the threshold in
        # wall time, in CPU time, and the longest CPU time of one step.
        self.sources: dict[str, list[float]] = {}
        self.gc = [GcPauses() for _ in range(3)]
        self.events: list[Event] = []  # with their time, the first KEEP_EVENTS
        self._due = 0.0
        self._beats = 0  # timer beats so far: one between two looks ends the step
        self.looks = 0  # looks at the main thread's stack so far
        self._gc_start = self._gc_cpu = 0.0
        self._running = False
        self._handle: asyncio.TimerHandle | None = None
        self._thread: threading.Thread | None = None
        self._switch = sys.getswitchinterval()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._main = threading.get_ident()
        self._cpu_clock = time.pthread_getcpuclockid(self._main)
        self._running = True
        gc.callbacks.append(self._on_gc)
        sys.setswitchinterval(LOOK)
        self._next()
        self._thread = threading.Thread(target=self._look, name="heed-loop-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._running = False
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._handle is not None:
            self._handle.cancel()
        if self._thread is not None:
            self._thread.join(1.0)
        sys.setswitchinterval(self._switch)

    def _next(self) -> None:
        self._due = time.perf_counter() + BEAT
        self._handle = self._loop.call_later(BEAT, self._beat)

    def _beat(self) -> None:
        self._beats += 1
        late = time.perf_counter() - self._due
        if late > self.threshold:
            self.late += 1
            self.latest = max(self.latest, late)
            self._keep(Event(time.time(), "late", late, 0.0, ""))
        if self._running:
            self._next()

    def _look(self) -> None:
        # The step seen: (root frame, timer beats then, since, cpu then, where, source)
        step: tuple[int, int, float, float, str, str] | None = None
        while self._running:
            time.sleep(LOOK)
            frame = sys._current_frames().get(self._main)
            now, cpu, beats = time.perf_counter(), time.clock_gettime(self._cpu_clock), self._beats
            root = _root(frame)
            self.looks += 1
            # A step ends when another frame runs, or when the loop ran a timer meanwhile
            # (the same task may have started a new step since).
            if step is not None and (root is None or (id(root), beats) != step[:2]):
                self._ended(now - step[2], cpu - step[3], step[4], step[5])
                step = None
            if step is None and root is not None and frame is not None:
                step = (id(root), beats, now, cpu, where(frame), source(frame))

    def _ended(self, seconds: float, cpu: float, at: str, src: str) -> None:
        if seconds <= self.threshold:
            return
        self.long_steps += 1
        self.by_work += cpu > seconds / 2
        counts = self.sources.setdefault(src, [0, 0, 0.0])
        counts[0] += 1
        counts[1] += cpu > self.threshold
        counts[2] = max(counts[2], cpu)
        s = Step(seconds, cpu, at)
        if len(self.steps) < KEEP or s > self.steps[-1]:
            self.steps = sorted([*self.steps, s], reverse=True)[:KEEP]
        self._keep(Event(time.time(), "step", seconds, cpu, src, at))

    def _keep(self, event: Event) -> None:
        # list.append is atomic under the GIL: the loop (timers, GC) and the looking
        # thread (steps) both add here.
        if len(self.events) < KEEP_EVENTS:
            self.events.append(event)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_start, self._gc_cpu = time.perf_counter(), time.thread_time()
            return
        took, cpu = time.perf_counter() - self._gc_start, time.thread_time() - self._gc_cpu
        g = self.gc[min(int(info.get("generation", 0)), 2)]
        g.count += 1
        g.total += took
        g.longest = max(g.longest, took)
        g.over += took > self.threshold
        g.cpu_longest = max(g.cpu_longest, cpu)
        g.cpu_over += cpu > self.threshold
        if took > self.threshold:
            self._keep(Event(time.time(), "gc", took, cpu, f"gen{info.get('generation', 0)}"))

    def summary(self) -> str:
        ms = self.threshold * 1000
        gcs = "; ".join(f"gen{n} {g.count} (total {g.total * 1000:.0f} ms, longest "
                        f"{g.longest * 1000:.1f} ms, {g.over} over {ms:g} ms; by CPU: longest "
                        f"{g.cpu_longest * 1000:.1f} ms, {g.cpu_over} over {ms:g} ms)"
                        for n, g in enumerate(self.gc))
        longest = " | ".join(f"{s.seconds * 1000:.1f} ms (cpu {s.cpu * 1000:.1f}) at {s.where}"
                             for s in self.steps)
        by = " | ".join(f"{src}: {int(n)} ({int(c)} by CPU, CPU up to {top * 1000:.1f} ms)"
                        for src, (n, c, top) in sorted(self.sources.items(),
                                                       key=lambda kv: -kv[1][1]))
        return (f"timer late over {ms:g} ms {self.late} times (latest "
                f"{self.latest * 1000:.1f} ms); steps over {ms:g} ms: {self.long_steps}, "
                f"{self.by_work} of them heed's own work (CPU over half the step); by "
                f"source (steps over {ms:g} ms, of them over {ms:g} ms of CPU): {by or 'none'}; "
                f"GC pauses: {gcs}; heap: {len(gc.get_objects())} objects tracked, "
                f"{gc.get_freeze_count()} frozen; longest steps: {longest or 'none'}")


def _root(frame: FrameType | None) -> FrameType | None:
    """The outermost frame of the step running now (None: the loop waits for events)."""
    root = None
    while frame is not None:
        if any(part in frame.f_code.co_filename for part in _LOOP_FILES):
            break
        root, frame = frame, frame.f_back
    return root


def source(frame: FrameType) -> str:
    """The task or callback a step belongs to: its outermost frame of heed's, or of any."""
    outer: FrameType | None = frame
    last = ours = frame
    while outer is not None and not any(p in outer.f_code.co_filename for p in _LOOP_FILES):
        last = outer
        if "/proxy/" in outer.f_code.co_filename:
            ours = outer
        outer = outer.f_back
    code = (ours if "/proxy/" in ours.f_code.co_filename else last).f_code
    return f"{'/'.join(code.co_filename.rsplit('/', 2)[-2:])} {code.co_name}"


def where(frame: FrameType) -> str:
    """The innermost frames of a stack, then heed's own: ``file:line func < caller …``."""
    stack = traceback.extract_stack(frame)[::-1]
    ours = [f for f in stack if "/proxy/" in f.filename and "/proxy/watch/" not in f.filename]
    seen: list[str] = []
    for f in [*stack[:2], *ours[:3]]:
        text = f"{'/'.join(f.filename.rsplit('/', 2)[-2:])}:{f.lineno} {f.name}"
        if text not in seen:
            seen.append(text)
    return " < ".join(seen)
