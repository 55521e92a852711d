"""The README quick start as a newcomer runs it, by day and at night (libfaketime moves the clock).

`heed serve` and the `heed` commands run as subprocesses under libfaketime at a
fixed Berlin time, so the shipped policy's quiet hours (21:00-08:00 Europe/Berlin)
hold or do not hold for certain, whatever the machine's own clock says; each
sentence the README's walkthrough says is checked in both cases.
"""

from __future__ import annotations

import glob
import re
import shlex
import shutil
import signal
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
from tests.test_e2e_cli import heed_cmd
from tests.unfaked import SHIM, real_now, unfaked_env

LIBFAKETIME = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
BERLIN = ZoneInfo("Europe/Berlin")
RECIPIENTS = ["alice@example.org", "bob@example.org", "carol@example.org"]


def berlin(stamp: str) -> float:
    return datetime.fromisoformat(stamp).replace(tzinfo=BERLIN).timestamp()


def faked_env(at: float) -> dict[str, str]:
    """Run a child with its wall clock at ``at`` (and running on from there)."""
    assert LIBFAKETIME, "libfaketime is installed by .ci/run (Debian: faketime, libfaketime)"
    env = unfaked_env()
    env.update(LD_PRELOAD=LIBFAKETIME[0], FAKETIME=f"{at - real_now():+.0f}",
               PYTHONPATH=str(ROOT), HEED_HTTP__LISTEN=f"127.0.0.1:{free_port()}")
    # redis-server aborts under the preload; its clock is not the one quiet hours read.
    env.setdefault("HEED_REDIS_SERVER", str(SHIM))
    return env


class Site:
    """A copy of the repository's config/ and policies/, and `heed serve` running in it."""

    def __init__(self, root: Path, upstream: Upstream) -> None:
        self.root, self.upstream = root, upstream
        self.port = free_port()
        self.proc: subprocess.Popen[str] | None = None
        self.env: dict[str, str] = {}

    def serve(self, at: float) -> None:
        self.env = faked_env(at)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve", "--listen", f"127.0.0.1:{self.port}",
             "--upstream", f"127.0.0.1:{self.upstream.port}"],
            cwd=self.root, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        wait_port(self.port)

    def heed(self, *args: str) -> str:
        return heed_cmd(*args, cwd=self.root, env=self.env).stdout

    def stop(self) -> str:
        if self.proc is None:
            return ""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        self.proc = None
        return err


@pytest.fixture
def site(tmp_path: Path, upstream: Upstream) -> Iterator[Site]:
    shutil.copytree(ROOT / "policies", tmp_path / "policies")
    shutil.copytree(ROOT / "config", tmp_path / "config")
    # The README's step before the walkthrough: a DKIM key for the sending domain
    # (marketing is never sent unsigned), its entry added to `dkim:` as printed.
    out = heed_cmd("dkim", "keygen", "example.com", "heed1", cwd=tmp_path).stdout
    entry = out.strip().splitlines()[-1].strip()
    config = tmp_path / "config" / "heed.yaml"
    config.write_text(config.read_text().replace("\ndkim: []", f"\ndkim:\n  {entry}"))
    s = Site(tmp_path, upstream)
    yield s
    s.stop()


def replies(swaks_out: str) -> dict[str, str]:
    """swaks's transcript -> {recipient: the reply to its RCPT, "DATA": the final reply}."""
    got: dict[str, str] = {}
    pending = None
    for line in swaks_out.splitlines():
        sent = re.match(r"\s*[~-]> RCPT TO:<([^>]+)>", line)
        if sent:
            pending = sent.group(1)
        elif line.lstrip().startswith(("<~", "<**", "<-")) and pending:
            got[pending], pending = line.split(" ", 1)[1].strip(), None
        elif re.match(r"\s*[~-]> \.$", line):
            pending = "DATA"
    return got


def readme_commands() -> list[list[str]]:
    """The walkthrough's commands exactly as README.md gives them (the block after "Try it")."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("Try it with swaks", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line) for line in block.replace("\\\n", " ").splitlines() if line]


def readme_says(*sentences: str) -> None:
    """The README still says what the test checks (an edit to either shows up here)."""
    text = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    for sentence in sentences:
        assert sentence in text, sentence


def walkthrough(site: Site, at: float) -> dict[str, str]:
    """The README's commands, as written, with heed's clock at ``at``."""
    site.serve(at)
    assert (site.root / "var" / "redis" / "appendonlydir").exists()  # durable embedded Redis
    assert shutil.which("swaks"), "swaks is installed by .ci/run"
    commands = readme_commands()
    assert [c[0] for c in commands] == [".venv/bin/heed"] * 3 + ["swaks", ".venv/bin/heed"]
    swaks = None
    for command in commands:
        if command[0] == "swaks":
            server = command.index("--server") + 1
            assert command[server] == "127.0.0.1:2525"  # what the README says heed listens on
            command[server] = f"127.0.0.1:{site.port}"
            swaks = subprocess.run(command, capture_output=True, text=True, timeout=60)
        else:
            site.heed(*command[1:])
    assert swaks is not None
    got = replies(swaks.stdout)
    readme_says("bob and carol are refused at `RCPT` with `550 5.7.1`",
                "`heed explain` says why for each", "alice's copy is accepted with `250`")
    assert got["bob@example.org"].startswith("550 5.7.1"), swaks.stdout
    assert got["carol@example.org"].startswith("550 5.7.1"), swaks.stdout
    assert got["alice@example.org"].startswith("250"), swaks.stdout
    assert got["DATA"].startswith("250"), swaks.stdout
    bob = site.heed("explain", "bob@example.org")
    assert "unsubscribe" in bob and "refused" in bob
    carol = site.heed("explain", "carol@example.org")
    assert "no consent" in carol
    return got


def test_by_day_alices_copy_reaches_the_upstream_at_once(site: Site) -> None:
    walkthrough(site, berlin("2026-12-03T12:00:00"))
    readme_says("From 08:00 to 21:00 Berlin time, alice's copy reaches the upstream at once.")
    assert site.upstream.recipients() == ["alice@example.org"]
    alice = site.heed("explain", "alice@example.org")
    assert "signup-form" in alice and "delivered" in alice
    assert "waiting in the delay queue" not in alice


@pytest.mark.parametrize("night", ["2026-12-03T23:30:00", "2026-12-04T03:00:00"])
def test_at_night_quiet_hours_hold_alices_copy_until_eight(site: Site, night: str) -> None:
    walkthrough(site, berlin(night))
    readme_says("From 21:00 to 08:00 Berlin time, quiet hours hold it: nothing reaches the "
                "upstream yet, and `heed explain alice@example.org` shows it \"delayed (held in "
                "the delay queue)\" by quiet hours and lists it under \"waiting in the delay "
                "queue\" with the time it is due. heed sends it at 08:00 Berlin time",
                "Held copies survive a restart of heed")
    assert site.upstream.recipients() == []
    alice = site.heed("explain", "alice@example.org")
    assert "delayed (held in the delay queue)" in alice and "quiet hours" in alice, alice
    assert "waiting in the delay queue" in alice and "due 2026-12-04 07:00 UTC" in alice, alice
    # Sent at 08:00 Berlin time (07:00 UTC in December), after a restart of heed.
    site.stop()
    site.serve(berlin("2026-12-04T08:00:30"))
    deadline = time.monotonic() + 60
    while not site.upstream.recipients() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert site.upstream.recipients() == ["alice@example.org"]
    alice = site.heed("explain", "alice@example.org")
    assert "delivered from the delay queue" in alice, alice
    assert "waiting in the delay queue" not in alice
