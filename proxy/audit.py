"""The audit trail: every decision and change, in a global stream and a capped one per person."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from redis.exceptions import RedisError

from proxy.errors import StateUnavailable
from proxy.keys import Keys, normalise_address


@dataclass(frozen=True)
class AuditEntry:
    """One recorded fact: who, stream, outcome, reasons, policy version, when."""

    at: float
    kind: str  # decision | change | release | expire | upstream
    recipient: str
    outcome: str
    stream: str = ""
    reasons: tuple[str, ...] = ()
    message_id: str = ""
    sender: str = ""
    policy_version: str = ""
    correlation_id: str = ""
    detail: str = ""

    def to_fields(self) -> dict[str, str]:
        out = {k: str(v) for k, v in asdict(self).items() if k != "reasons"}
        out["at"] = repr(self.at)
        out["reasons"] = json.dumps(list(self.reasons), ensure_ascii=False)
        return out

    @classmethod
    def from_fields(cls, raw: dict[Any, Any]) -> AuditEntry:
        data = {(k.decode() if isinstance(k, bytes) else k):
                (v.decode() if isinstance(v, bytes) else v) for k, v in raw.items()}
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {k: v for k, v in data.items() if k in known}
        kwargs["at"] = float(kwargs.get("at", 0))
        kwargs["reasons"] = tuple(json.loads(kwargs.get("reasons", "[]")))
        return cls(**kwargs)


class Audit:
    """Appends entries (in the caller's pipeline) and reads them back."""

    def __init__(self, redis: Any, keys: Keys, *, maxlen_global: int = 1_000_000,
                 maxlen_person: int = 200) -> None:
        self.redis = redis
        self.keys = keys
        self.maxlen_global = maxlen_global
        self.maxlen_person = maxlen_person

    def add(self, pipe: Any, entries: Sequence[AuditEntry]) -> None:
        for entry in entries:
            data = entry.to_fields()
            pipe.xadd(self.keys.audit, data, maxlen=self.maxlen_global, approximate=True)
            pipe.xadd(self.keys.person_audit(entry.recipient), data,
                      maxlen=self.maxlen_person, approximate=True)

    async def record(self, entries: Sequence[AuditEntry]) -> None:
        try:
            pipe = self.redis.pipeline(transaction=False)
            self.add(pipe, entries)
            await pipe.execute()
        except RedisError as exc:
            raise StateUnavailable("redis unavailable") from exc

    async def recent(self, address: str, count: int = 20) -> list[AuditEntry]:
        """This person's newest entries first."""
        try:
            raw = await self.redis.xrevrange(
                self.keys.person_audit(normalise_address(address)), count=count)
        except RedisError as exc:
            raise StateUnavailable("redis unavailable") from exc
        return [AuditEntry.from_fields(f) for _, f in raw]

    async def tail(self, count: int = 100, since: float | None = None) -> list[AuditEntry]:
        """The newest entries of the global trail, newest first."""
        start = f"{int(since * 1000)}-0" if since is not None else "-"
        try:
            raw = await self.redis.xrevrange(self.keys.audit, "+", start, count=count)
        except RedisError as exc:
            raise StateUnavailable("redis unavailable") from exc
        return [AuditEntry.from_fields(f) for _, f in raw]
