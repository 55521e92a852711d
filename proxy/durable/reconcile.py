"""At start, the serving Redis is brought in step with the durable one before heed reads from it.

The serving Redis fsyncs once a second, so a crash of the machine (or a kill -9 while
its fsync was slow) can lose its last changes. The durable Redis has them all: each
change is counted on both (``Keys.durable_seq``); unequal counts mean the serving
Redis lost some, and every durable key is then copied over (DUMP/RESTORE), and those
the durable Redis no longer has (an erasure) deleted. A durable Redis never used
before (a split added to an existing site) is first filled from the serving one.
"""

from __future__ import annotations

import logging
from typing import Any

from proxy.keys import Keys

log = logging.getLogger("heed")
_BATCH = 500


async def _durable_keys(client: Any, keys: Keys) -> list[bytes]:
    found: list[bytes] = []
    for pattern in (f"{keys.prefix}:p:*", keys.suppressed, keys.erasures):
        async for key in client.scan_iter(match=pattern, count=1000):
            text = key.decode() if isinstance(key, bytes) else str(key)
            if keys.is_durable(text):
                found.append(key if isinstance(key, bytes) else text.encode())
    return found


async def _copy(src: Any, dst: Any, names: list[bytes]) -> None:
    for i in range(0, len(names), _BATCH):
        chunk = names[i:i + _BATCH]
        read = src.pipeline(transaction=False)
        for name in chunk:
            read.dump(name)
        dumped = await read.execute()
        write = dst.pipeline(transaction=False)
        for name, value in zip(chunk, dumped, strict=True):
            if value is None:
                write.delete(name)
            else:
                write.restore(name, 0, value, replace=True)
        await write.execute()


async def reconcile(serving: Any, durable: Any, keys: Keys, *, restore: bool = True) -> str:
    """Make the serving Redis hold what the durable one holds; says what was done.

    ``restore=False`` (a command run beside a serving heed) only fills a new durable
    Redis: restoring while others write could copy back a value older than theirs."""
    d_seq, s_seq = await durable.get(keys.durable_seq), await serving.get(keys.durable_seq)
    if d_seq is None:
        names = await _durable_keys(serving, keys)
        await _copy(serving, durable, names)
        await durable.set(keys.durable_seq, s_seq or 0)
        if s_seq is None:
            await serving.set(keys.durable_seq, 0)
        return f"durable Redis filled from the serving one ({len(names)} keys)"
    if d_seq == s_seq or not restore:
        return "in step" if d_seq == s_seq else "not checked"
    names = await _durable_keys(durable, keys)
    have = set(names)
    gone = [k for k in await _durable_keys(serving, keys) if k not in have]
    await _copy(durable, serving, names)
    for i in range(0, len(gone), _BATCH):
        await serving.delete(*gone[i:i + _BATCH])
    await serving.set(keys.durable_seq, d_seq)
    message = (f"serving Redis restored from the durable one: count {_s(s_seq)} -> "
               f"{_s(d_seq)}, {len(names)} keys copied, {len(gone)} deleted")
    log.warning(message)
    return message


def _s(value: Any) -> str:
    return "none" if value is None else value.decode() if isinstance(value, bytes) else str(value)


def run_id_of(info: Any) -> str:
    """The ``run_id`` in an INFO reply (raw text or redis-py's parsed dict)."""
    if isinstance(info, dict):
        return str(info.get("run_id", ""))
    text = info.decode() if isinstance(info, bytes) else str(info)
    return next((line.partition(":")[2].strip() for line in text.splitlines()
                 if line.startswith("run_id:")), "")


async def bring_in_step(serving: Any, durable: Any, keys: Keys) -> str:
    """Reconcile, then mark this serving server (its run_id) as in step (guard.py)."""
    run_id = run_id_of(await serving.info("server"))
    done = await reconcile(serving, durable, keys)
    await serving.set(keys.serving_run, run_id)
    return done
