"""The README's path, as a newcomer takes it: `heed serve` on the embedded Redis, swaks, the CLI."""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy.embedded_redis import free_port, wait_port
from tests.conftest import ROOT, Upstream


def heed_cmd(*args: str, cwd: Path, check: bool = True,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(env or os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-m", "proxy", *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=60)
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A working directory laid out like the repository: config/ and policies/."""
    shutil.copytree(ROOT / "policies", tmp_path / "policies")
    (tmp_path / "config").mkdir()
    shutil.copy(ROOT / "config" / "heed.yaml", tmp_path / "config" / "heed.yaml")
    # The README's first step: a DKIM key for the sending domain (marketing is never
    # sent unsigned), its entry added to `dkim:` as `heed dkim keygen` prints it.
    out = heed_cmd("dkim", "keygen", "example.com", "heed1", cwd=tmp_path).stdout
    entry = out.strip().splitlines()[-1].strip()
    config = tmp_path / "config" / "heed.yaml"
    config.write_text(config.read_text().replace("\ndkim: []", f"\ndkim:\n  {entry}"))
    return tmp_path


@pytest.fixture
def served(site: Path, upstream: Upstream) -> Iterator[tuple[subprocess.Popen[str], int, Path]]:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), HEED_HTTP__LISTEN=f"127.0.0.1:{free_port()}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "serve", "--listen", f"127.0.0.1:{port}",
         "--upstream", f"127.0.0.1:{upstream.port}"],
        cwd=site, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_port(port)
        yield proc, port, site
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def pump(stream: Any, into: queue.Queue[str]) -> None:
    """Lines of a child's output into a queue, until the pipe is closed (by the fixture)."""
    with contextlib.suppress(ValueError, OSError):
        for line in stream:
            into.put(line)


def test_sighup_with_bad_edit_keeps_last_good_policy(
        served: tuple[subprocess.Popen[str], int, Path], upstream: Upstream) -> None:
    proc, port, site = served
    (site / "policies" / "20-broken.yaml").write_text("streams:\n  oops: [1, 2\n")
    assert proc.stderr is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=pump, args=(proc.stderr, lines), daemon=True).start()
    seen: list[str] = []
    deadline, asked = time.monotonic() + 60, 0.0
    # Ask until it answers (a busy machine may take its time), not for a fixed moment.
    # No timed queue waits: under libfaketime their deadlines miss the kernel's clock.
    while not any("policy reload failed" in x for x in seen):
        assert time.monotonic() < deadline and proc.poll() is None, "".join(seen)
        if time.monotonic() - asked > 2:
            proc.send_signal(signal.SIGHUP)
            asked = time.monotonic()
        with contextlib.suppress(queue.Empty):
            while True:
                seen.append(lines.get_nowait())
        time.sleep(0.05)
    time.sleep(0.5)  # the error lines that follow it
    with contextlib.suppress(queue.Empty):
        while True:
            seen.append(lines.get_nowait())
    assert any("20-broken.yaml:" in x for x in seen), "".join(seen)
    assert proc.poll() is None  # still serving, on the last good policy


def test_check_reports_file_and_line(site: Path) -> None:
    ok = heed_cmd("check", cwd=site)
    assert "policies ok" in ok.stdout and "warning" not in ok.stderr
    (site / "policies" / "30-promo.yaml").write_text(
        "streams:\n  promo:\n    kind: marketing\n    label:\n      en: Promotions\n"
        "      vi: Khuyến mãi\n")
    warned = heed_cmd("check", cwd=site)  # a missing label warns; it does not fail
    assert "warning: " in warned.stderr and "30-promo.yaml:4: stream 'promo' has no label " \
        "in ar, th" in warned.stderr, warned.stderr
    (site / "policies" / "20-broken.yaml").write_text(
        "streams:\n  promo:\n    kind: marketing\n    rules:\n      - if: no_such_thing\n"
        "        then: drop\n")
    result = heed_cmd("check", cwd=site, check=False)
    assert result.returncode != 0
    assert "20-broken.yaml:5" in result.stderr, result.stderr


def test_bad_policy_keeps_heed_from_starting(site: Path) -> None:
    (site / "policies" / "20-broken.yaml").write_text("default_stream: [\n")
    result = heed_cmd("serve", "--listen", f"127.0.0.1:{free_port()}", cwd=site, check=False)
    assert result.returncode != 0 and "20-broken.yaml:" in result.stderr


def test_policy_test_dry_run(site: Path, tmp_path: Path) -> None:
    eml = tmp_path / "m.eml"
    eml.write_text("From: offers@news.example.com\nTo: dan@example.org\nSubject: hi\n\nhello\n")
    out = heed_cmd("policy", "test", str(eml), "--to", "dan@example.org", cwd=site).stdout
    assert "dan@example.org: stream marketing: drop" in out and "no_consent" in out


def worker_pids(proc: subprocess.Popen[str]) -> list[int]:
    """The parent's worker processes (not its redis-server or resource tracker)."""
    out = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
    found = []
    for pid in map(int, out.stdout.split()):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            found.append(pid)
    return found


def sessions_per_process(port: int, pids: list[int]) -> collections.Counter[int]:
    """Established connections to ``port`` held by each of ``pids`` (from /proc)."""
    owner: dict[int, int] = {}
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                owner[int(target[8:-1])] = pid
    counts: collections.Counter[int] = collections.Counter()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            local_port, state, inode = int(f[1].rsplit(":", 1)[1], 16), f[3], int(f[9])
            if local_port == port and state == "01" and inode in owner:  # 01: ESTABLISHED
                counts[owner[inode]] += 1
    return counts


def test_sessions_opened_as_soon_as_heed_listens_reach_every_worker(
        site: Path, upstream: Upstream) -> None:
    """Every worker's socket listens before the port answers: a tool that connects the
    moment the port opens (a restart in the middle of a campaign) does not land on the
    first worker alone."""
    port = free_port()
    # An HTTP port of its own: on the shared default (8025) a worker could meet another
    # heed still holding it, fail, and leave every session to the other worker.
    env = dict(os.environ, PYTHONPATH=str(ROOT), HEED_HTTP__LISTEN=f"127.0.0.1:{free_port()}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "serve", "--workers", "2", "--listen",
         f"127.0.0.1:{port}", "--upstream", f"127.0.0.1:{upstream.port}"],
        cwd=site, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    clients: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 60
        # The port answers once the parent has opened every worker's socket; a session
        # then waits in its worker's queue until that worker has started (slow on a
        # busy machine), so the greeting may take a while.
        while not clients:
            try:
                clients.append(socket.create_connection(("127.0.0.1", port), timeout=60))
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, "heed did not listen"
                time.sleep(0.01)
        clients += [socket.create_connection(("127.0.0.1", port), timeout=60)
                    for _ in range(19)]
        for c in clients:
            assert c.recv(512).startswith(b"220")  # accepted by a worker, greeted
        counts = sessions_per_process(port, worker_pids(proc))
        assert sum(counts.values()) == 20
        assert len(counts) == 2, counts  # 2^-19 odds of one worker by chance
    finally:
        for c in clients:
            c.close()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def test_workers_share_the_port_and_a_killed_one_is_replaced(site: Path,
                                                             upstream: Upstream) -> None:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), HEED_HTTP__LISTEN=f"127.0.0.1:{free_port()}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "serve", "--workers", "2", "--listen",
         f"127.0.0.1:{port}", "--upstream", f"127.0.0.1:{upstream.port}"],
        cwd=site, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_port(port)

        def workers() -> list[int]:
            return worker_pids(proc)

        deadline = time.monotonic() + 20
        while len(workers()) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        import smtplib

        first = workers()
        assert len(first) == 2, first
        os.kill(first[0], signal.SIGKILL)
        # A connection the kernel had already queued on the dead worker's socket is
        # reset, and until the dead process is torn down (slow on a busy machine) a
        # new one may be refused; SMTP clients retry, and so does this one.
        time.sleep(0.5)

        def connect() -> smtplib.SMTP:
            for _ in range(40):
                try:
                    return smtplib.SMTP("127.0.0.1", port, timeout=10)
                except (ConnectionRefusedError, ConnectionResetError,
                        smtplib.SMTPServerDisconnected):
                    time.sleep(0.25)
            return smtplib.SMTP("127.0.0.1", port, timeout=10)

        for _ in range(6):  # the other worker keeps serving; the dead one comes back
            with connect() as c:
                # Transactional (shipped policy): no caps, so every copy goes out now.
                c.sendmail("notice@accounts.example.com", ["ann@example.org"],
                           "Subject: hi\r\nDate: Mon, 23 Nov 2026 12:00:00 +0000\r\n\r\nx\r\n")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            alive = workers()
            if len(alive) == 2 and first[0] not in alive:
                break
            time.sleep(0.2)
        assert len(alive) == 2 and first[0] not in alive
        assert upstream.recipients() == ["ann@example.org"] * 6
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def test_management_commands_find_the_running_serve_from_any_directory(
        served: tuple[subprocess.Popen[str], int, Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    _, _, site = served
    elsewhere = tmp_path_factory.mktemp("elsewhere")  # no config/ here
    heed_cmd("consent", "grant", "dora@example.org", "--list", "marketing",
             "--source", "phone", cwd=elsewhere)
    out = heed_cmd("explain", "dora@example.org", cwd=site).stdout
    assert "source phone" in out  # written to the Redis that `heed serve` runs
    assert not (elsewhere / "var").exists()  # no second, private Redis was started there


def test_serve_warns_at_start_when_the_upstream_is_unreachable(site: Path) -> None:
    port, closed = free_port(), free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), HEED_HTTP__LISTEN="")
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "serve", "--listen", f"127.0.0.1:{port}",
         "--upstream", f"127.0.0.1:{closed}"],
        cwd=site, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_port(port)  # it serves anyway: held mail and refusals need no upstream
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert f"cannot reach the upstream 127.0.0.1:{closed}: Connection refused" in err, err


def test_check_connect_tries_upstream_and_redis(site: Path, upstream: Upstream) -> None:
    env = dict(os.environ, HEED_UPSTREAM__PORT=str(upstream.port))
    ok = heed_cmd("check", "--connect", cwd=site, env=env)
    assert f"upstream ok: 127.0.0.1:{upstream.port}" in ok.stdout and "redis ok" in ok.stdout
    closed = free_port()
    bad = heed_cmd("check", "--connect", cwd=site, check=False,
                   env=dict(os.environ, HEED_UPSTREAM__PORT=str(closed)))
    assert bad.returncode != 0
    assert f"upstream 127.0.0.1:{closed}: Connection refused" in bad.stderr, bad.stderr
    down = heed_cmd("check", "--connect", "--redis", f"redis://127.0.0.1:{closed}/0", cwd=site,
                    check=False, env=env)
    assert down.returncode != 0 and f"redis redis://127.0.0.1:{closed}/0:" in down.stderr


def test_sigterm_while_starting_stops_the_embedded_redis_too(site: Path) -> None:
    """Stopped before it listens (here: while it waits for a silent upstream's greeting),
    heed takes its embedded Redis down with it and leaves no note of itself behind; a
    SIGHUP then (SIGHUP's default action ends a process) does not stop it."""
    from proxy.embedded_redis import ping
    from proxy.locate import running

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()  # accepts, never greets: the start-up probe waits
    env = dict(os.environ, PYTHONPATH=str(ROOT), HEED_HTTP__LISTEN="")
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "serve", "--listen", f"127.0.0.1:{free_port()}",
         "--upstream", f"127.0.0.1:{silent.getsockname()[1]}"],
        cwd=site, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sock = site / "var" / "redis" / "redis.sock"
    try:
        deadline = time.monotonic() + 60
        while not (sock.exists() and ping(sock)):
            assert time.monotonic() < deadline and proc.poll() is None, "no embedded Redis"
            time.sleep(0.05)
        proc.send_signal(signal.SIGHUP)  # a reload asked for while starting does not stop it
        time.sleep(0.5)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    finally:
        silent.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert not ping(sock)
    assert running(os.environ) is None
