"""A disk that stalls an fsync now and then, made reproducible: an LD_PRELOAD shim for redis-server.

This VM has no device-mapper (so no dm-delay), so the stall is injected where Redis
meets the disk: a small shared object, compiled with gcc at bench time, wraps
``fsync`` and ``fdatasync`` (Redis calls ``fdatasync`` for its AOF on Linux) and sleeps
``stall_ms`` in the first such call made ``every_s`` seconds or more after the last
stall. The call itself is then made: the data still reaches the disk. Only
redis-server gets the shim, through a wrapper script named by ``HEED_REDIS_SERVER``
(proxy/embedded_redis.py), so heed's own process runs as it would.

    with stalled_redis(tmp, stall_ms=150, every_s=2) as env:  # env for `heed serve`
        ...
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <pthread.h>
#include <time.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static double last;  /* monotonic seconds of the last stall (0: none yet) */

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void maybe_stall(void) {
    const char *ms = getenv("HEED_STALL_MS"), *every = getenv("HEED_STALL_EVERY_S");
    double stall = ms ? atof(ms) : 0, gap = every ? atof(every) : 1;
    if (stall <= 0) return;
    pthread_mutex_lock(&lock);
    double t = now();
    int due = 0;
    if (last == 0) last = t;  /* the first stall comes one gap after the first fsync */
    else if (t - last >= gap) { last = t; due = 1; }
    pthread_mutex_unlock(&lock);
    if (due) {
        long ns = (long)(stall * 1e6);
        struct timespec s = {ns / 1000000000L, ns % 1000000000L};
        nanosleep(&s, NULL);
    }
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    maybe_stall();
    return real(fd);
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    maybe_stall();
    return real(fd);
}
"""


def build_shim(workdir: Path) -> Path:
    """Compile the shim into ``workdir``; RuntimeError says why when gcc is missing or fails."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise RuntimeError("--stall-ms needs gcc (apt-get install gcc) to build its fsync shim")
    src, lib = workdir / "fsync_stall.c", workdir / "fsync_stall.so"
    src.write_text(_SHIM)
    done = subprocess.run([gcc, "-O2", "-shared", "-fPIC", "-o", str(lib), str(src), "-ldl",
                           "-lpthread"], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"building the fsync shim failed: {done.stderr[-800:]}")
    return lib


@contextlib.contextmanager
def stalled_redis(workdir: Path, *, stall_ms: float, every_s: float) -> Iterator[dict[str, str]]:
    """Environment variables under which heed's embedded redis-server stalls its fsyncs."""
    workdir.mkdir(parents=True, exist_ok=True)
    lib = build_shim(workdir)
    real = shutil.which("redis-server")
    if real is None:
        raise RuntimeError("--stall-ms needs the machine's redis-server")
    wrapper = workdir / "redis-server-stalling"
    wrapper.write_text(f"#!/bin/sh\nLD_PRELOAD={lib} HEED_STALL_MS={stall_ms} "
                       f"HEED_STALL_EVERY_S={every_s} exec {real} \"$@\"\n")
    wrapper.chmod(0o755)
    yield {"HEED_REDIS_SERVER": str(wrapper)}


def apply_env(env: dict[str, str]) -> contextlib.AbstractContextManager[None]:
    """Set ``env`` in os.environ for the block (children inherit it), and restore after."""

    @contextlib.contextmanager
    def scoped() -> Iterator[None]:
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    return scoped()
