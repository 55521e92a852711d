"""Suppression export (every refusal; erased people as hashed ids) and import from services."""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from proxy.errors import StateUnavailable
from proxy.keys import is_address, normalise_address
from proxy.settings import parse_duration
from proxy.tell.formats import READERS, Row
from proxy.types import GLOBAL_SCOPE, REFUSAL_KINDS

COLUMNS = ("address", "suppression_id", "list", "kind", "at", "channel", "tool")
SCAN = 500  # people per SSCAN page and per pipeline


def _s(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def parse_since(value: str | None, now: float) -> float | None:
    """``7d`` (a duration back from now), an ISO date or time, or None for everything."""
    if not value:
        return None
    try:
        return now - parse_duration(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"expected a duration (7d) or an ISO date, got {value!r}") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def _tool(told: dict[str, str], scope: str) -> str:
    """What the tool heard of a refusal of ``scope``: told, not-told, pending or ""."""
    words = [v.split(" ", 1)[0] for f, v in told.items() if f.startswith("list:")
             and (scope == GLOBAL_SCOPE or f == "list:" + scope)]
    for word in ("told", "pending", "not-told"):
        if word in words:
            return word
    return ""


async def export(state: Any, since: float | None) -> list[dict[str, str]]:
    """Every refusal (and erasure) recorded since ``since``, oldest first."""
    k, rows = state.keys, []
    try:
        cursor: Any = 0
        while True:
            cursor, members = await state.redis.sscan(k.people, cursor, count=SCAN)
            people = sorted(_s(m) for m in members)
            pipe = state.redis.pipeline(transaction=False)
            for a in people:
                pipe.hgetall(k.refusal(a))
                pipe.hgetall(k.tool_told(a))
            raw = await pipe.execute() if people else []
            for i, a in enumerate(people):
                told = {_s(f): _s(v) for f, v in (raw[2 * i + 1] or {}).items()}
                for scope, text in (raw[2 * i] or {}).items():
                    try:
                        rec = json.loads(_s(text))
                    except ValueError:
                        rec = {}
                    at = float(rec.get("at") or 0) if isinstance(rec, dict) else 0.0
                    if since is not None and at < since:
                        continue
                    rows.append({"address": a, "suppression_id": "", "list": _s(scope),
                                 "kind": str(rec.get("kind", "manual")), "at": iso(at),
                                 "channel": str(rec.get("channel", "")),
                                 "tool": _tool(told, _s(scope)), "_at": repr(at)})
            if int(cursor) == 0:
                break
        erased = await state.redis.zrangebyscore(
            k.erasures, since if since is not None else "-inf", "+inf", withscores=True)
        seen = {_s(d) for d, _ in erased}
        # Erasures from before heed kept their time: in the set, without a time.
        loose = [] if since is not None else [
            _s(d) for d in await state.redis.smembers(k.suppressed) if _s(d) not in seen]
    except RedisError as exc:
        raise StateUnavailable("redis unavailable") from exc
    for digest, at in [(_s(d), float(t)) for d, t in erased] + [(d, 0.0) for d in sorted(loose)]:
        rows.append({"address": "", "suppression_id": digest, "list": GLOBAL_SCOPE,
                     "kind": "erased", "at": iso(at) if at else "", "channel": "",
                     "tool": "", "_at": repr(at)})
    rows.sort(key=lambda r: (float(r["_at"]), r["address"], r["list"]))
    return [{c: r[c] for c in COLUMNS} for r in rows]


def render(rows: list[dict[str, str]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps({"format": "heed-suppressions-v1", "suppressions": rows},
                          ensure_ascii=False, indent=1) + "\n"
    out = io.StringIO()
    writer = csv.DictWriter(out, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


@dataclass
class ImportReport:
    imported: int = 0  # refusals new to heed
    known: int = 0  # rows heed had already (an import run twice changes nothing)
    errors: list[str] = field(default_factory=list)


async def import_file(state: Any, path: Path | str, source: str,
                      lst: str | None = None) -> ImportReport:
    """Refuse every good row (never a consent, never a lift); bad rows reported by line."""
    report = ImportReport()
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        report.errors.append(f"line 0: cannot read the file ({type(exc).__name__})")
        return report
    now = state.clock.now()
    for row in READERS[source](text, now):
        if isinstance(row, str):
            report.errors.append(row)
            continue
        await _apply(state, row, source, lst, report)
    return report


async def _apply(state: Any, row: Row, source: str, lst: str | None,
                 report: ImportReport) -> None:
    if row.suppression_id:  # heed's own export: an erased person, by hashed id only
        try:
            added = await state.redis.sadd(state.keys.suppressed, row.suppression_id)
            await state.redis.zadd(state.keys.erasures, {row.suppression_id: row.at}, nx=True)
        except RedisError as exc:
            raise StateUnavailable("redis unavailable") from exc
        report.imported += int(added)
        report.known += 1 - int(added)
        return
    if not is_address(row.address) or row.kind not in REFUSAL_KINDS:
        report.errors.append(f"{row.line}: not a refusal")
        return
    scope = lst or row.list
    new = await state.refuse(normalise_address(row.address), row.kind,
                             list=None if scope in (None, "", GLOBAL_SCOPE) else scope,
                             channel=f"import:{source}", at=row.at)
    report.imported += int(new)
    report.known += int(not new)
