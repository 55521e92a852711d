"""Redis URLs: three forms parse, bad ones stop heed at start, Sentinel and Cluster carry mail."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
from redis.asyncio.cluster import RedisCluster

from proxy import redisconn
from proxy.clock import ManualClock
from proxy.errors import ConfigError
from proxy.keys import Keys
from proxy.redisconn import (
    LeanPipeline,
    RedisTarget,
    _HiredisPacking,
    connect_redis,
    parse_redis_url,
)
from proxy.settings import load_settings
from tests.conftest import Upstream
from tests.harness import CONSENT_POLICY, HeedThread, make_settings
from tests.test_e2e_cli import heed_cmd
from tests.topologies import LocalCluster, LocalSentinel


def test_sentinel_form() -> None:
    t = parse_redis_url("redis+sentinel://:s%40cret@10.0.0.1:26379,[::1],sent3:26380/mymaster/2"
                        "?sentinel_password=watch")
    assert t == RedisTarget("sentinel", t.url, nodes=(("10.0.0.1", 26379), ("::1", 26379),
                                                      ("sent3", 26380)),
                            service="mymaster", db=2, password="s@cret",
                            sentinel_password="watch")
    assert parse_redis_url("redis+sentinel://s1/mymaster").db == 0


def test_cluster_form() -> None:
    t = parse_redis_url("redis+cluster://app:pw@n1:7000,n2:7001,n3")
    assert (t.kind, t.nodes, t.username, t.password) == (
        "cluster", (("n1", 7000), ("n2", 7001), ("n3", 6379)), "app", "pw")
    assert parse_redis_url("redis+cluster://n1:7000/0").kind == "cluster"
    assert parse_redis_url("redis://127.0.0.1:6379/0").kind == "single"
    assert parse_redis_url("unix:///run/redis.sock?db=0").kind == "single"


@pytest.mark.parametrize(("url", "problem"), [
    ("redis+cluster://n1:7000/1", "database 0 only"),
    ("redis+cluster://n1:7000?x=1", "no query"),
    ("redis+sentinel://s1:26379", "/SERVICE"),
    ("redis+sentinel://s1:26379/m/x", "database must be a number"),
    ("redis+sentinel://s1:26379/m?password=x", "unknown parameter 'password'"),
    ("redis+sentinel://s1:99999/m", "bad port"),
    ("redis+cluster://:7000", "without a host"),
    ("mongodb://db:27017", "redis://"),
])
def test_bad_urls_are_refused_at_start(url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, env={"HEED_REDIS__URL": url})
    assert "'redis.url'" in str(info.value) and problem in str(info.value)


async def test_commands_packed_by_hiredis_reach_redis_as_redis_py_packs_them(
        redis_url: str) -> None:
    """The same bytes as redis-py's own packer, and its errors for what it cannot pack."""
    client = connect_redis(redis_url)
    python = redis.asyncio.Connection()  # redis-py's packer, for the comparison
    try:
        conn = client.connection_pool.make_connection()
        assert isinstance(conn, _HiredisPacking)
        values = ("ünï ✓", b"\x00\xff", 7, -1.5, 1e20, 2**70, memoryview(b"mv"), b"x" * 9000,
                  bytearray(b"ba"))
        for command in (("HSET", "h", "f", *values), ("CLIENT SETNAME", "n"),
                        ("XADD", "s", "MAXLEN", "~", 1000, "*", "at", "1.5")):
            assert b"".join(conn.pack_command(*command)) == b"".join(
                python.pack_command(*command))
        for bad in (True, None):
            with pytest.raises(redis.DataError):
                conn.pack_command("SET", "k", bad)
        with pytest.raises(UnicodeEncodeError):
            conn.pack_command("SET", "k", "\udc80")
        pipe = client.pipeline(transaction=False)
        pipe.hset("h", mapping={"ünï": "✓", "n": 2.5})
        pipe.hgetall("h")
        assert (await pipe.execute())[1] == {"ünï".encode(): "✓".encode(), b"n": b"2.5"}
    finally:
        await client.aclose()


def _build(p: Any) -> None:
    p.set("s", "x", ex=60)
    p.hset("h", mapping={"ünï": "✓", "n": 2})
    p.hincrby("s", "n", 1)  # WRONGTYPE: an error reply, the others still run
    p.hgetall("h")
    p.zadd("z", {"a": 1.5, "b": 2})
    p.zrangebyscore("z", 0, "+inf", withscores=True)
    p.smismember("missing", ["a", "b"])
    p.eval("return {1, 'two', {3}}", 0)
    p.xadd("x", {"f": "v"}, maxlen=10)
    p.xlen("x")
    p.get("nothing")
    p.expire("h", 60)


def _shown(replies: list[Any]) -> list[Any]:
    replies[8] = b"id"  # a stream id: the time it was written
    return [(type(r), str(r)) if isinstance(r, Exception) else r for r in replies]


async def test_lean_pipeline_replies_as_redis_pys_pipeline(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every reply shaped by redis-py's callbacks, an error reply in its place (or raised
    as redis-py raises it), the other commands run."""
    client = connect_redis(redis_url)
    read, real = [], redisconn._replies

    async def counted(*args: Any) -> Any:
        read.append(args[1])
        return await real(*args)

    monkeypatch.setattr(redisconn, "_replies", counted)
    try:
        got = []
        for pipe in (client.pipeline(transaction=False), redis.asyncio.client.Pipeline(
                client.connection_pool, client.response_callbacks, False, None)):
            await client.flushall()
            _build(pipe)
            got.append(_shown(await pipe.execute(raise_on_error=False)))
            _build(pipe)
            with pytest.raises(redis.ResponseError) as info:
                await pipe.execute()
            got.append(str(info.value))
        assert isinstance(client.pipeline(), LeanPipeline)
        assert got[0] == got[2] and got[1] == got[3]
        assert got[0][3] == {"ünï".encode(): "✓".encode(), b"n": b"2"}
        assert got[0][5] == [(b"a", 1.5), (b"b", 2.0)]
        assert got[0][6] == [False, False] and got[0][0] is True and got[0][-2] is None
        assert got[0][2][0] is redis.ResponseError and "Command # 3" in got[1]
        assert len(read) == 2  # the lean pipeline's two, read by hiredis straight
    finally:
        await client.aclose()


async def test_lean_pipeline_drops_a_connection_out_of_step(redis_server: Any) -> None:
    """A reply that does not come in time fails the round trip and its connection goes;
    a connection Redis dropped between batches is replaced (redis-py's one retry)."""
    client = connect_redis(redis_server.url, read_timeout=0.2)
    other = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        # BLPOP with no timeout on an empty list: Redis never answers (certain, not slow).
        with pytest.raises(redis.TimeoutError):
            await client.pipeline(transaction=False).set("k", "1").blpop(["never"], 0).execute()
        assert await client.pipeline(transaction=False).get("k").execute() == [b"1"]
        await other.client_kill_filter(_type="normal", skipme=True)
        pipe = client.pipeline(transaction=False).incr("k").get("k")
        assert await pipe.execute() == [2, b"2"]
    finally:
        await other.aclose()
        await client.aclose()


async def test_cluster_client_is_a_cluster_client(redis_cluster: LocalCluster) -> None:
    client = connect_redis(redis_cluster.url)
    try:
        assert isinstance(client, RedisCluster)
        assert len(client.get_primaries()) == 0  # learnt on first use ...
        await client.initialize()
        assert len(client.get_primaries()) == 3  # ... from one listed node or more
    finally:
        await client.aclose()


def test_mail_through_a_sentinel_url(redis_sentinel: LocalSentinel, upstream: Upstream,
                                     tmp_path: Path) -> None:
    """heed knows only the Sentinel's port: it learns the master from it, and state lands there."""
    redis_sentinel.flush()
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "policy.yaml").write_text(CONSENT_POLICY)
    settings = make_settings(redis_url=redis_sentinel.url, upstream_port=upstream.port,
                             policies=tmp_path / "p")
    h = HeedThread(settings, ManualClock(1_800_000_000.0)).start()
    try:
        assert h.heed is not None
        h.call(h.heed.state.grant("ana@example.org", "marketing", source="form"))
        with h.smtp() as c:
            c.mail("news@shop.example.com")
            assert c.rcpt("ana@example.org")[0] == 250
            assert c.rcpt("bo@example.org")[0] == 550  # no consent: read through the Sentinel
            assert c.data("Subject: hi\r\n\r\nhello\r\n")[0] == 250
        assert upstream.recipients() == ["ana@example.org"]
    finally:
        h.stop()
    with redis.Redis(port=redis_sentinel.master.port) as master:
        assert master.hexists(Keys().consent("ana@example.org"), "marketing")
        assert master.xlen(Keys().person_audit("bo@example.org")) == 1


@pytest.mark.parametrize("topology", ["redis_cluster", "redis_sentinel"])
def test_cli_on_cluster_and_sentinel_urls(topology: str, request: pytest.FixtureRequest,
                                          tmp_path: Path) -> None:
    """`heed consent grant`, `heed refuse` and `heed explain` with --redis set to either form."""
    target: LocalCluster | LocalSentinel = request.getfixturevalue(topology)
    target.flush()
    for args in (["consent", "grant", "dee@example.org", "--list", "marketing",
                  "--source", "cli-test"],
                 ["refuse", "dee@example.org", "--reason", "complaint"]):
        heed_cmd(*args, "--redis", target.url, cwd=tmp_path)
    (tmp_path / "policies").mkdir()  # explain reads the policy for its "would be" lines
    (tmp_path / "policies" / "policy.yaml").write_text(CONSENT_POLICY)
    told = heed_cmd("explain", "dee@example.org", "--redis", target.url, cwd=tmp_path).stdout
    assert "cli-test" in told and "complaint" in told
