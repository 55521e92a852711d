"""Run a whole heed (SMTP edge, mail path, scheduler) in a thread of its own for tests."""

from __future__ import annotations

import asyncio
import os
import smtplib
import subprocess
import sys
import threading
from collections.abc import Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from proxy.app import Heed
from proxy.clock import Clock
from proxy.embedded_redis import free_port, wait_port
from proxy.settings import Settings, load_settings

T = TypeVar("T")

# The smallest consent policy: marketing needs consent and no refusal.
CONSENT_POLICY = """
version: consent
default_stream: marketing
streams:
  marketing:
    kind: marketing
    unsigned: allow  # relayed without a DKIM key
    rules:
      - {if: refused, then: drop}
      - {if: no_consent, then: drop}
"""

# A transactional stream beside marketing, and which sender goes to which (after the streams).
TRANSACTIONAL = """\
  transactional:
    kind: transactional
classify:
  - sender: "*@news.example.com"
    stream: marketing
  - sender: "*@shop.example.com"
    stream: transactional
"""


def marketing_policy(stream: str = "", rules: str = "", after: str = "") -> str:
    """A test policy whose marketing stream (list ``marketing``, relayed unsigned) drops the
    refused and the unconsented. ``stream`` (keys of the stream), ``rules`` (rules after
    those two) and ``after`` (more streams, classify) are YAML lines, indented as in the file."""
    return ("version: test\ndefault_stream: marketing\nstreams:\n  marketing:\n"
            "    list: marketing\n    unsigned: allow  # relayed without a DKIM key\n"
            f"{stream}    rules:\n      - {{if: refused, then: drop}}\n"
            f"      - {{if: no_consent, then: drop}}\n{rules}{after}")


def policy_dir(parent: Path, text: str, name: str = "policies") -> Path:
    """A policies directory under ``parent`` holding ``text`` as its one policy file."""
    d = parent / name
    d.mkdir()
    (d / "policy.yaml").write_text(text)
    return d


def serve_process(tmp: Path, name: str, *, policy: str, redis_url: str, upstream_port: int,
                  env: Mapping[str, str], args: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    """`heed serve` as its own process on a free port, logging to ``tmp/NAME.log``, once it
    listens. ``policy`` is written to ``tmp/policies`` the first time; ``env`` adds to the
    environment (HTTP off unless it says otherwise)."""
    policies = tmp / "policies"
    if not policies.exists():
        policies.mkdir()
        (policies / "policy.yaml").write_text(policy)
    port = free_port()
    full = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent),
                HEED_HTTP__LISTEN="", HEED_LOG_LEVEL="WARNING", **env)
    with (tmp / f"{name}.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve", "--listen", f"127.0.0.1:{port}",
             "--upstream", f"127.0.0.1:{upstream_port}", "--redis", redis_url,
             "--policies", str(policies), *args], cwd=tmp, env=full, stdout=log, stderr=log)
    wait_port(port)
    return proc


def make_settings(*, redis_url: str, upstream_port: int, policies: Path,
                  **sections: dict[str, Any]) -> Settings:
    raw: dict[str, Any] = {
        "smtp": {"listen": f"127.0.0.1:{free_port()}", "hostname": "heed.test"},
        "upstream": {"host": "127.0.0.1", "port": upstream_port, "timeout": "5s"},
        "redis": {"url": redis_url},
        "http": {"listen": None, "public_url": "https://heed.test"},
        "unsubscribe": {"mailto_domain": "heed.test",
                        "keys": [{"id": "t1", "secret": "test-secret-0123456789abcdef"}],
                        "erase_secret": "erase-secret-0123456789abcdef"},
        # Routed to heed in these tests, so VERP is on (without a domain it is off).
        "bounces": {"domain": "heed.test"},
        "policies": str(policies),
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return load_settings(None, env={}, overrides=raw)


class HeedThread:
    """heed on its own event loop in a thread, so tests can drive it with blocking smtplib."""

    def __init__(self, settings: Settings, clock: Clock, **kwargs: Any) -> None:
        self.settings = settings
        self.clock = clock
        self.kwargs = kwargs
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.heed: Heed | None = None

    def start(self) -> HeedThread:
        self.thread.start()

        async def boot() -> Heed:
            heed = Heed(self.settings, redis_url=str(self.settings.redis.url), clock=self.clock,
                        **self.kwargs)
            await heed.start(run_scheduler=False)
            return heed

        self.heed = self.call(boot())
        return self

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run ``coro`` on heed's loop, after the records written behind are in Redis."""

        async def settled() -> T:
            if self.heed is not None:
                await self.heed.batched.flush()
            return await coro

        return asyncio.run_coroutine_threadsafe(settled(), self.loop).result(timeout)

    def settle(self) -> None:
        """Records heed writes behind (``redis.write_behind``) are in Redis after this."""
        self.call(asyncio.sleep(0))

    def release_due(self) -> int:
        """One scheduler round, as `heed serve` runs every poll interval."""
        assert self.heed is not None
        return self.call(self.heed.scheduler.run_once())

    @property
    def port(self) -> int:
        return self.settings.smtp.listen[1]

    def smtp(self) -> smtplib.SMTP:
        client = smtplib.SMTP("127.0.0.1", self.port, timeout=10)
        client.ehlo("tool.test")
        return client

    def stop(self) -> None:
        if self.heed is not None:
            self.call(self.heed.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
