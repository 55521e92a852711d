"""The README's path, as a newcomer takes it: `heed serve` on the embedded Redis, swaks, the CLI."""

from __future__ import annotations

import collections
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from proxy.embedded_redis import free_port, wait_port
from tests.conftest import ROOT, Upstream


def heed_cmd(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-m", "proxy", *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=60)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def away_from_now(policy: Path) -> None:
    """Move the shipped quiet hours (21:00-08:00 Berlin) to a window six hours from now,
    so that the walkthrough's delivery does not depend on the wall clock."""
    hour = datetime.now(ZoneInfo("Europe/Berlin")).hour
    text = re.sub(r'start: "\d\d:\d\d"\n(\s+)end: "\d\d:\d\d"',
                  f'start: "{(hour + 6) % 24:02d}:00"\n\\1end: "{(hour + 7) % 24:02d}:00"',
                  policy.read_text(encoding="utf-8"))
    policy.write_text(text, encoding="utf-8")


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A working directory laid out like the repository: config/ and policies/."""
    shutil.copytree(ROOT / "policies", tmp_path / "policies")
    away_from_now(tmp_path / "policies" / "00-streams.yaml")
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


def test_readme_walkthrough(served: tuple[subprocess.Popen[str], int, Path],
                            upstream: Upstream) -> None:
    proc, port, site = served
    assert (site / "var" / "redis" / "appendonlydir").exists()  # durable embedded Redis
    heed_cmd("consent", "grant", "alice@example.org", "--list", "marketing",
             "--source", "signup-form", cwd=site)
    heed_cmd("consent", "grant", "bob@example.org", "--list", "marketing", cwd=site)
    heed_cmd("refuse", "bob@example.org", "--reason", "unsubscribe", cwd=site)
    assert shutil.which("swaks"), "swaks is installed by .ci/run"
    swaks = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{port}", "--from", "offers@news.example.com",
         "--to", "alice@example.org,bob@example.org,carol@example.org",
         "--header", "Subject: Our autumn sale"],
        capture_output=True, text=True, timeout=60)
    assert "550 5.7.1" in swaks.stdout, swaks.stdout
    assert upstream.recipients() == ["alice@example.org"]
    bob = heed_cmd("explain", "bob@example.org", cwd=site).stdout
    assert "unsubscribe" in bob and "refused" in bob
    carol = heed_cmd("explain", "carol@example.org", cwd=site).stdout
    assert "no_consent" in carol or "no consent" in carol
    alice = heed_cmd("explain", "alice@example.org", cwd=site).stdout
    assert "signup-form" in alice and "deliver" in alice


def test_sighup_with_bad_edit_keeps_last_good_policy(
        served: tuple[subprocess.Popen[str], int, Path], upstream: Upstream) -> None:
    proc, port, site = served
    (site / "policies" / "20-broken.yaml").write_text("streams:\n  oops: [1, 2\n")
    proc.send_signal(signal.SIGHUP)
    time.sleep(1.0)  # the reload is logged; give the process a moment to handle the signal
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=15)
    assert "policy reload failed" in err and "20-broken.yaml:" in err


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
    """The workers start listening together: a tool that connects the moment the port
    opens (a restart in the middle of a campaign) does not land on the first alone."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "serve", "--workers", "2", "--listen",
         f"127.0.0.1:{port}", "--upstream", f"127.0.0.1:{upstream.port}"],
        cwd=site, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    clients: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 60
        while not clients:
            try:
                clients.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, "heed did not listen"
                time.sleep(0.01)
        clients += [socket.create_connection(("127.0.0.1", port), timeout=10)
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
