"""Structured logs: one JSON object per line (or plain text for people at a terminal)."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import sys
import time
from typing import Any

from proxy.keys import domain_of, normalise_address

_STANDARD = frozenset(vars(logging.makeLogRecord({})))
# What json.dumps(default=str, ensure_ascii=False) builds on every call, built once
# (the mail path writes a line per recipient).
_ENCODER = json.JSONEncoder(default=str, ensure_ascii=False)


class JsonFormatter(logging.Formatter):
    """Render a record and its ``extra`` fields as one JSON line."""

    def __init__(self) -> None:
        super().__init__()
        self._stamp = (-1, "")  # a whole second and its text, replaced together

    def format(self, record: logging.LogRecord) -> str:
        second, stamp = self._stamp
        if int(record.created) != second:  # strftime once a second, not once a line
            second = int(record.created)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._stamp = (second, stamp)
        out: dict[str, Any] = {
            "ts": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key[:1] != "_":
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return _ENCODER.encode(out)


# Domain separation: a log digest is not the suppression digest of the same address.
_LOG_CONTEXT = b"heed-log-address-v1\x00"


class LoggedAddress:
    """How an address appears in a log line (``log_addresses``).

    ``full``: as given. ``hash``: ``h:`` and 16 hex digits of an HMAC-SHA256 keyed with
    the erase secret, the same for one address in every line (grep-able, not readable;
    without the secret a list of known addresses cannot be tested against it).
    ``domain``: ``*@`` and the domain only."""

    def __init__(self, mode: str = "full", secret: bytes = b"") -> None:
        self.mode = mode
        self.secret = secret

    def __call__(self, address: str) -> str:
        if self.mode == "full" or not address:
            return address
        if self.mode == "domain":
            return "*@" + domain_of(address)
        digest = hmac.new(self.secret, _LOG_CONTEXT + normalise_address(address).encode(),
                          hashlib.sha256).hexdigest()
        return "h:" + digest[:16]


FULL = LoggedAddress()


def setup_logging(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiosmtpd logs every command line at INFO; that is debug detail for heed's operators.
    logging.getLogger("mail.log").setLevel(max(logging.WARNING, root.level))
    # Neither format shows the caller, thread or process, and the mail path logs a
    # line per recipient: skip gathering them (the logging HOWTO's "Optimization").
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
