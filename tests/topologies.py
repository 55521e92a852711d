"""Local Redis topologies for tests: a 3-master Cluster and a master watched by a Sentinel."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from proxy.embedded_redis import EmbeddedRedis, free_port
from tests.unfaked import unfaked_env


class RedisProcess(EmbeddedRedis):
    """One non-durable redis-server on 127.0.0.1; ``extra`` are more options, ``config`` a file."""

    def __init__(self, folder: Path, extra: list[str] | None = None) -> None:
        super().__init__(folder, durable=False)
        self.extra = extra or []
        self.config: Path | None = None

    def args(self) -> list[str]:
        binary, *rest = super().args()
        return [binary, *([str(self.config)] if self.config else []), *rest, *self.extra]

    def started(self) -> RedisProcess:
        self.start(timeout=15)
        return self


def _wait(check: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


@dataclass
class LocalCluster:
    """Three masters, no replicas, every slot covered."""

    nodes: list[RedisProcess]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    @classmethod
    def start(cls, folder: Path, masters: int = 3) -> LocalCluster:
        nodes = []
        try:
            for i in range(masters):
                # The bus port is named: port + 10000 may be taken or past 65535.
                nodes.append(RedisProcess(folder / f"node{i}", [
                    "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                    "--cluster-port", str(free_port()), "--cluster-node-timeout", "2000",
                ]).started())
            subprocess.run(["redis-cli", "--cluster", "create",
                            *(f"127.0.0.1:{n.port}" for n in nodes),
                            "--cluster-replicas", "0", "--cluster-yes"],
                           check=True, capture_output=True, timeout=60, env=unfaked_env())
            cluster = cls(nodes)
            _wait(cluster.ready, "cluster_state:ok")
            return cluster
        except BaseException:
            for node in nodes:
                node.stop()
            raise

    def ready(self) -> bool:
        for node in self.nodes:
            with redis.Redis(port=node.port) as r:
                if r.cluster("info").get("cluster_state") != "ok":
                    return False
        return True

    def flush(self) -> None:
        for node in self.nodes:
            with redis.Redis(port=node.port) as r:
                r.flushall()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@dataclass
class LocalSentinel:
    """One master and one Sentinel watching it as ``mymaster`` (quorum 1)."""

    master: RedisProcess
    sentinel: RedisProcess
    service: str = "mymaster"

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel.port}/{self.service}/0"

    @classmethod
    def start(cls, folder: Path) -> LocalSentinel:
        master = RedisProcess(folder / "master").started()
        watcher = RedisProcess(folder / "sentinel")
        try:
            watcher.data_dir.mkdir(parents=True, exist_ok=True)
            config = watcher.data_dir / "sentinel.conf"  # Sentinel rewrites its own file
            config.write_text(f"sentinel monitor mymaster 127.0.0.1 {master.port} 1\n"
                              "sentinel down-after-milliseconds mymaster 2000\n")
            watcher.extra, watcher.config = ["--sentinel"], config
            watcher.started()

            def knows_master() -> bool:
                with redis.Redis(port=watcher.port) as r:
                    return bool(r.sentinel_get_master_addr_by_name("mymaster"))

            _wait(knows_master, "the sentinel to know its master")
            return cls(master, watcher)
        except BaseException:
            watcher.stop()
            master.stop()
            raise

    def flush(self) -> None:
        with redis.Redis(port=self.master.port) as r:
            r.flushall()

    def stop(self) -> None:
        self.sentinel.stop()
        self.master.stop()
