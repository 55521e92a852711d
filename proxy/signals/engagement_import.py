"""`heed engage import FILE.csv`: a tool's engagement export, bad rows reported by line,
good rows kept, and a second import of the same file changes nothing."""

from __future__ import annotations

import asyncio
import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from redis.exceptions import RedisError

from proxy.consent_csv import parse_time
from proxy.errors import StateUnavailable
from proxy.keys import is_address, normalise_address
from proxy.state import State
from proxy.types import ENGAGEMENT_KINDS

# The answers a file can carry: heed's own kinds (a scanner's click, the re-ask button)
# are only ever heard by heed itself.
KINDS = tuple(k for k in ENGAGEMENT_KINDS if k not in ("machine-click", "repermission-yes"))
COLUMNS = ("address", "kind", "time", "list", "stream")
ALIASES = {"email": "address", "at": "time"}
CHUNK = 200  # rows written concurrently (each is one round trip)


@dataclass
class EngageReport:
    imported: int = 0
    known: int = 0  # rows already recorded (same or a later time of that kind): unchanged
    errors: list[str] = field(default_factory=list)  # "line N: problem"


@dataclass(frozen=True)
class _Row:
    address: str
    kind: str
    at: float
    scope: str  # the list or stream named, "" when none


def read(path: Path, now: float, report: EngageReport) -> list[_Row]:
    """The good rows; each bad one is reported by its line."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        report.errors.append(f"line 0: cannot read the file ({type(exc).__name__})")
        return []
    reader = csv.reader(io.StringIO(text))
    try:
        header = [ALIASES.get(h.strip().lower(), h.strip().lower()) for h in next(reader, [])]
    except csv.Error as exc:
        report.errors.append(f"line 1: unreadable CSV ({exc})")
        return []
    missing = [c for c in ("address", "kind", "time") if c not in header]
    unknown = [c for c in header if c not in COLUMNS]
    if missing or unknown or len(set(header)) != len(header):
        report.errors.append(f"line 1: the header must name address, kind, time and "
                             f"optionally list or stream (got {','.join(header) or 'nothing'})")
        return []
    rows = []
    try:
        for row in reader:
            if not any(c.strip() for c in row):
                continue
            parsed = _row(header, row, now)
            if isinstance(parsed, str):
                report.errors.append(f"line {reader.line_num}: {parsed}")
            else:
                rows.append(parsed)
    except csv.Error as exc:
        report.errors.append(f"line {reader.line_num}: unreadable CSV ({exc}); stopped here")
    return rows


def _row(header: list[str], row: list[str], now: float) -> _Row | str:
    if len(row) != len(header):
        return f"expected {len(header)} columns, got {len(row)}"
    rec = dict(zip(header, (c.strip() for c in row), strict=True))
    if not is_address(rec["address"].strip("<>")):
        return f"not an email address: {rec['address']!r}"
    if rec["kind"] not in KINDS:
        return f"unknown kind {rec['kind']!r} (one of {', '.join(KINDS)})"
    if not rec["time"]:
        return "time is empty (ISO 8601 or epoch seconds)"
    try:
        at = parse_time(rec["time"], now)
    except ValueError as exc:
        return f"bad time {rec['time']!r}: {exc}"
    return _Row(normalise_address(rec["address"]), rec["kind"], at,
                rec.get("list") or rec.get("stream") or "")


async def import_engagement(state: State, path: Path, now: float) -> EngageReport:
    """Record each row not already known; rows of one person and kind in time order."""
    report = EngageReport()
    rows = sorted(read(path, now, report), key=lambda r: r.at)
    pairs = sorted({(r.address, r.kind) for r in rows})
    try:
        pipe = state.redis.pipeline(transaction=False)
        for address, kind in pairs:
            pipe.hget(state.keys.engagement(address), state.keys.engaged_at(kind))
        known = {p: float(v) for p, v in zip(pairs, await pipe.execute(), strict=True)
                 if v is not None}
    except RedisError as exc:
        raise StateUnavailable("redis unavailable") from exc
    todo = []
    for row in rows:
        latest = known.get((row.address, row.kind))
        if latest is not None and row.at <= latest:
            report.known += 1  # idempotent: the same file twice records nothing new
            continue
        known[(row.address, row.kind)] = row.at
        todo.append(row)
    for start in range(0, len(todo), CHUNK):
        await asyncio.gather(*(
            state.engage(r.address, kind=r.kind, at=r.at, source="import",
                         why=f"{path.name}" + (f", {r.scope}" if r.scope else ""))
            for r in todo[start:start + CHUNK]))
        report.imported += len(todo[start:start + CHUNK])
    return report
