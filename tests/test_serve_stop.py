"""`heed serve` stops its workers before Redis goes: a clean stop logs no warning.

systemd stops a unit by sending SIGTERM to every process of it at once (KillMode=
control-group, its default), and a terminal's Ctrl-C sends SIGINT to the whole
foreground group: the Redis heed uses closes while heed stops. Its workers (tell,
scheduler, lifecycle) must be stopped by then, not still waiting in a blocking read.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from proxy.embedded_redis import EmbeddedRedis
from tests.conftest import Upstream
from tests.harness import CONSENT_POLICY, serve_process


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_with_redis_stopping_at_once_logs_no_warning(tmp_path: Path, upstream: Upstream,
                                                          sig: signal.Signals) -> None:
    redis = EmbeddedRedis(tmp_path / "redis", durable=False)
    url = redis.start()
    try:
        heed = serve_process(
            tmp_path, "heed", policy=CONSENT_POLICY, redis_url=url, upstream_port=upstream.port,
            env={"HEED_UNSUBSCRIBE__KEYS": "[{id: t1, secret: test-secret-0123456789abcdef}]",
                 "HEED_TELL__LIFECYCLE_EVERY": "1s"})
        log = tmp_path / "heed.log"
        started = len(log.read_bytes())
        # Long enough for every worker to be idle: the tell worker in its blocking
        # outbox read, the scheduler between rounds.
        time.sleep(1.5)
        assert redis.process is not None
        heed.send_signal(sig)
        redis.process.send_signal(sig)
        assert heed.wait(30) == 0
    finally:
        redis.stop()
    after = log.read_bytes()[started:].decode()
    noisy = [line for line in after.splitlines()
             if json.loads(line).get("level") in ("warning", "error", "critical")]
    assert noisy == [], after
