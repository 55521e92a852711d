"""Consent CSV files: rows read and checked one by one, each bad row reported by its line."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from redis.exceptions import RedisError

from proxy.audit import AuditEntry
from proxy.errors import StateUnavailable
from proxy.keys import is_address, normalise_address
from proxy.tell.outbox import Event, note

CSV_HEADER = ("email", "list", "granted_at", "source", "ip", "text")


@dataclass
class ImportReport:
    """What an import did: rows written, and "line N: message" for each row skipped."""

    imported: int = 0
    errors: list[str] = field(default_factory=list)


def proof_text(source: str, ip: str, text: str) -> str:
    return f"source {source or '-'}; ip {ip or '-'}; text {text or '-'}"


def read_rows(source: Path | str | TextIO, now: Callable[[], float], source_default: str,
              report: ImportReport) -> Iterator[tuple[str, str, str]]:
    """(address, list, proof JSON) for each good row; the others go to ``report.errors``."""
    if isinstance(source, str | Path):
        try:
            stream: TextIO = io.StringIO(Path(source).read_text(encoding="utf-8-sig"))
        except (OSError, UnicodeDecodeError) as exc:
            report.errors.append(f"line 0: cannot read the file ({type(exc).__name__})")
            return
    else:
        stream = source
    reader = csv.reader(stream)
    try:
        header = [h.strip().lstrip("\ufeff").lower() for h in next(reader, [])]
    except csv.Error as exc:
        report.errors.append(f"line 1: unreadable CSV ({exc})")
        return
    problem = _header_problem(header)
    if problem:
        report.errors.append(f"line 1: {problem}")
        return
    try:
        for row in reader:
            line = reader.line_num
            if not any(c.strip() for c in row):
                continue  # blank lines are not rows
            parsed = _row(header, row, now(), source_default)
            if isinstance(parsed, str):
                report.errors.append(f"line {line}: {parsed}")
            else:
                yield parsed
    except csv.Error as exc:
        report.errors.append(f"line {reader.line_num}: unreadable CSV ({exc}); stopped here")


def _header_problem(header: list[str]) -> str:
    if not header:
        return f"empty file; the header must be {','.join(CSV_HEADER)}"
    missing = [c for c in ("email", "list") if c not in header]
    unknown = sorted(set(header) - set(CSV_HEADER))
    if missing:
        return f"header lacks {', '.join(missing)} (expected {','.join(CSV_HEADER)})"
    if unknown:
        return f"unknown columns {', '.join(unknown)} (expected {','.join(CSV_HEADER)})"
    if len(set(header)) != len(header):
        return "a column is named twice"
    return ""


def _row(header: list[str], row: list[str], now: float,
         source_default: str) -> tuple[str, str, str] | str:
    """A row as (address, list, proof JSON), or what is wrong with it."""
    if len(row) != len(header):
        return f"expected {len(header)} columns, got {len(row)}"
    rec = dict(zip(header, (c.strip() for c in row), strict=True))
    if not is_address(rec["email"].strip("<>")):
        return f"not an email address: {rec['email']!r}"
    if not rec["list"]:
        return "list is empty"
    try:
        at = parse_time(rec.get("granted_at", ""), now)
    except ValueError as exc:
        return f"bad granted_at {rec.get('granted_at')!r}: {exc}"
    proof = json.dumps({"list": rec["list"], "granted_at": at,
                        "source": rec.get("source") or source_default,
                        "ip": rec.get("ip", ""), "text": rec.get("text", "")},
                       ensure_ascii=False)
    return normalise_address(rec["email"]), rec["list"], proof


def parse_time(value: str, default: float) -> float:
    """ISO 8601 (UTC when no zone) or epoch seconds; empty means ``default``."""
    if not value:
        return default
    try:
        at = float(value)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError("use ISO 8601 or epoch seconds") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        at = parsed.timestamp()
    if not math.isfinite(at) or at < 0:
        raise ValueError("not a time")
    if at > default + 86400:
        raise ValueError("in the future")  # a typo or a wrong zone, not a real agreement
    return at


async def write_grants(state: Any, rows: Sequence[tuple[str, str, str]]) -> int:
    """Write one batch of good rows (address, list, proof JSON) to ``state`` in one round trip."""
    if not rows:
        return 0
    now = state.clock.now()
    try:
        pipe = state.redis.pipeline(transaction=False)
        for address, lst, proof in rows:
            pipe.hset(state.keys.consent(address), lst, proof)
            pipe.sadd(state.keys.people, address)
            rec = json.loads(proof)
            state.audit.add(pipe, [AuditEntry(
                at=now, kind="change", recipient=address, outcome="granted", stream=lst,
                detail="csv import; " + proof_text(rec["source"], rec["ip"], rec["text"]))])
            note(pipe, state.keys, Event("consent.granted", address, lst,
                                         channel=rec["source"], at=now))
        await pipe.execute()
    except RedisError as exc:
        raise StateUnavailable("redis unavailable") from exc
    return len(rows)
