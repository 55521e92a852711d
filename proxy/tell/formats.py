"""Suppression files of sending services, in their published layouts, read row by row.

Each reader yields a Row for a good row and "line N: why" for a bad one. JSON
documents are numbered by item ("item N"), CSV and JSON Lines by line.
"""

from __future__ import annotations

import csv
import email.utils
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from proxy.consent_csv import parse_time
from proxy.keys import is_address, normalise_address

Out = Iterator["Row | str"]


@dataclass(frozen=True)
class Row:
    line: str  # "line N" or "item N"
    address: str
    kind: str  # unsubscribe | complaint | bounce | manual (proxy/types.py REFUSAL_KINDS)
    at: float
    list: str | None = None
    suppression_id: str = ""  # heed's own export: an erased person


def _time(value: Any, now: float) -> float:
    text = str(value or "").strip()
    if "," in text:  # RFC 5322 date (Mailgun: "Fri, 21 Oct 2011 11:02:55 UTC")
        try:
            parsed = email.utils.parsedate_to_datetime(text.replace(" UTC", " +0000"))
        except (TypeError, ValueError):
            raise ValueError("not a date") from None
        return parse_time(str(parsed.timestamp()), now)
    return parse_time(text.removesuffix(" UTC"), now)


def _records(text: str, keys: tuple[str, ...]) -> Iterator[tuple[str, dict[str, Any]] | str]:
    """("line N" or "item N", record) from a JSON document (under one of ``keys``, or a
    list), JSON Lines, or CSV with a header; field names as written."""
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: nested past json's depth
            doc = None
        if doc is not None:
            items = doc if isinstance(doc, list) else next(
                (doc[k] for k in keys if isinstance(doc, dict) and k in doc), None)
            if not isinstance(items, list):
                yield f"line 1: none of {', '.join(keys)} in this JSON document"
                return
            for n, item in enumerate(items, 1):
                yield (f"item {n}", item) if isinstance(item, dict) else f"item {n}: not an object"
            return
        for n, line in enumerate(text.splitlines(), 1):  # JSON Lines (SES export jobs)
            if line.strip():
                try:
                    item = json.loads(line)
                except (ValueError, RecursionError):
                    yield f"line {n}: not JSON"
                    continue
                yield (f"line {n}", item) if isinstance(item, dict) else f"line {n}: not an object"
        return
    reader = csv.DictReader(io.StringIO(text))
    try:
        if not reader.fieldnames:
            yield "line 1: no header row"
            return
        for record in reader:
            yield f"line {reader.line_num}", {k.strip(): v for k, v in record.items() if k}
    except csv.Error as exc:  # a field over the csv limit, a stray quote: say where, stop
        yield f"after line {reader.line_num}: unreadable CSV ({exc}); stopped here"


def _reader(keys: tuple[str, ...], address: tuple[str, ...],
            classify: Callable[[dict[str, Any]], str | None],
            when: tuple[str, ...]) -> Callable[[str, float], Out]:
    def read(text: str, now: float) -> Out:
        for got in _records(text, keys):
            if isinstance(got, str):
                yield got
                continue
            where, rec = got
            value = next((str(rec[k]) for k in address if rec.get(k)), "")
            if not is_address(value.strip()):
                yield f"{where}: not an address: {value[:80]!r}"
                continue
            kind = classify(rec)
            if kind is None:
                yield f"{where}: unknown reason"
                continue
            stamp = next((rec[k] for k in when if rec.get(k) not in (None, "")), "")
            try:
                at = _time(stamp, now)
            except ValueError as exc:
                yield f"{where}: bad time {str(stamp)[:40]!r}: {exc}"
                continue
            yield Row(where, normalise_address(value), kind, at)
    return read


def _ses(rec: dict[str, Any]) -> str | None:
    # SES v2 ListSuppressedDestinations / export jobs: Reason BOUNCE or COMPLAINT.
    return {"BOUNCE": "bounce", "COMPLAINT": "complaint"}.get(str(rec.get("Reason")).upper())


def _sendgrid(rec: dict[str, Any]) -> str | None:
    # Spam reports carry "ip"; bounces, blocks and invalid emails "reason"/"status";
    # global unsubscribes only email and created.
    if "ip" in rec:
        return "complaint"
    if rec.get("status") or rec.get("reason"):
        return "bounce"
    return "unsubscribe"


def _mailgun(rec: dict[str, Any]) -> str | None:
    # Bounces: code, error; unsubscribes: tag(s); complaints: address and created_at only.
    if rec.get("code") or rec.get("error"):
        return "bounce"
    if "tags" in rec or "tag" in rec:
        return "unsubscribe"
    return "complaint"


def _postmark(rec: dict[str, Any]) -> str | None:
    return {"HardBounce": "bounce", "SpamComplaint": "complaint",
            "ManualSuppression": "unsubscribe"}.get(str(rec.get("SuppressionReason")))


def _own(text: str, now: float) -> Out:
    """heed's own export (`heed suppression export --format csv|json`)."""
    for got in _records(text, ("suppressions",)):
        if isinstance(got, str):
            yield got
            continue
        n, rec = got
        digest = str(rec.get("suppression_id") or "").strip().lower()
        kind = str(rec.get("kind") or "").strip()
        try:
            at = _time(rec.get("at"), now)
        except ValueError as exc:
            yield f"{n}: bad time: {exc}"
            continue
        if kind == "erased":
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                yield f"{n}: an erased row needs its 64-digit suppression_id"
                continue
            yield Row(n, "", kind, at, suppression_id=digest)
            continue
        address = str(rec.get("address") or "").strip()
        if not is_address(address):
            yield f"{n}: not an address: {address[:80]!r}"
            continue
        if kind not in ("unsubscribe", "complaint", "bounce", "manual"):
            yield f"{n}: unknown kind {kind[:40]!r}"
            continue
        yield Row(n, normalise_address(address), kind, at, str(rec.get("list") or "") or None)


READERS: dict[str, Callable[[str, float], Out]] = {
    "ses": _reader(("SuppressedDestinationSummaries",), ("EmailAddress",), _ses,
                   ("LastUpdateTime", "LastUpdatedTimestamp")),
    "sendgrid": _reader(("result",), ("email",), _sendgrid, ("created",)),
    "mailgun": _reader(("items",), ("address",), _mailgun, ("created_at",)),
    "postmark": _reader(("Suppressions",), ("EmailAddress",), _postmark, ("CreatedAt",)),
    "csv": _own,
}
