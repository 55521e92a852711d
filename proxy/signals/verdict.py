"""A bounce's verdict: who failed, for which reason, and whether that refuses them."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.signals.bounce_read import Failure, Reading, address_of, prose_failures
from proxy.signals.bounce_reasons import REASONS, Reason, classify, command_of, hard, status_of

NOT_FAILED = ("delivered", "relayed", "expanded")  # RFC 3464 §2.3.3: not a bounce


@dataclass(frozen=True)
class Bounced:
    """One failed recipient: the address the report names (untrusted), reason, hard or soft."""

    address: str | None
    reason: Reason
    hard: bool
    status: str
    diagnostic: str
    remote: str = ""  # the DSN's Remote-MTA, when it has one

    @property
    def detail(self) -> str:
        """For the audit: heed's reason, Sisimai's name for it, the status and the words."""
        words = " ".join(self.diagnostic.split())[:200]
        return (f"reason {self.reason.name} (sisimai {self.reason.sisimai}); "
                f"status {self.status or '-'}; {words}").strip("; ")


def _senders(reading: Reading) -> set[str]:
    """Addresses of the returned original's sender, which a notice may also quote."""
    out = set()
    for line in reading.original.splitlines()[:200]:
        name, _, value = line.partition(":")
        if name.strip().lower() in ("from", "return-path", "sender", "reply-to"):
            addr = address_of(value)
            if addr:
                out.add(addr)
    return out


def _failures(reading: Reading) -> list[Failure]:
    if reading.kind == "dsn":
        failed = [f for f in reading.failures if f.action not in NOT_FAILED]
        if not failed and reading.failures:
            return []  # a delivery (or relay) notice: nothing failed
        if failed:
            prose = {f.address: f.diagnostic for f in prose_failures(
                reading.notice, _senders(reading))}
            for f in failed:  # no Diagnostic-Code: the notice's words about them
                if not f.diagnostic:
                    f.diagnostic = prose.get(f.address) or reading.notice
            return failed
    failed = prose_failures(reading.notice, _senders(reading))
    named = {f.address for f in failed}
    extra = [Failure(a, "failed", "", reading.notice) for a in reading.failed_header
             if a not in named]
    failed = extra + failed if extra else failed
    if reading.failed_header:
        listed = set(reading.failed_header)
        failed = [f for f in failed if f.address in listed] or failed
    return failed or [Failure(None, "failed", "", reading.notice)]


def _at_stage(reason: Reason, status: str, command: str) -> Reason:
    """A refusal is read with the SMTP stage it came at (RFC 5321 §3.3).

    "User unknown" after the message was sent (DATA) or with a mailbox-status code
    (5.2.x, RFC 3463 §3.3) was the recipient's filter judging this message: the
    address was accepted at RCPT. Anything refused at MAIL FROM is about the sender.
    """
    if command == "MAIL" and reason.refuses:
        return REASONS["sender-refused"]
    if reason.name != "no-such-user":
        return reason
    subject = status.split(".")[1] if status.count(".") >= 2 else ""
    if (command == "DATA" and subject != "1") or (subject == "2" and command != "RCPT"):
        return REASONS["filtered"]
    return reason


def for_person(found: list[Bounced], address: str) -> Bounced | None:
    """The failure a VERP'd bounce reports for its one recipient: theirs, else the worst."""
    mine = [b for b in found if b.address == address]
    pool = mine or found
    return next((b for b in pool if b.hard), pool[0] if pool else None)


def bounced(reading: Reading) -> list[Bounced]:
    """Every failed recipient of a bounce, each with its reason and hard or soft."""
    out = []
    for failure in _failures(reading):
        text = failure.diagnostic or reading.notice
        status = failure.status.strip() or status_of(text)
        reason = _at_stage(classify(text, status), status,
                           command_of(failure.diagnostic) or command_of(reading.notice))
        if failure.action == "delayed" and not reason.refuses:
            reason = REASONS["expired"] if reason.name == "unknown" else reason
        is_hard = failure.action != "delayed" and hard(reason, status, text)
        out.append(Bounced(failure.address, reason, is_hard, status, text, failure.remote))
    return out
