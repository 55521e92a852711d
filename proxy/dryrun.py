"""`heed policy test`: the decision for a message and its reasons, without sending anything."""

from __future__ import annotations

import email.utils
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from proxy.bulk.gate import gate
from proxy.classify import classify
from proxy.clock import SystemClock
from proxy.dkim import DkimSigner
from proxy.errors import HeedError
from proxy.finish import UnsubscribeAndSign
from proxy.keys import Keys
from proxy.message import Message, MessageRejected, normalise
from proxy.policy import decide, load_policies
from proxy.privacy import erase_secret
from proxy.settings import Settings, UnsubscribeKey
from proxy.state import State
from proxy.tokens import TokenSigner
from proxy.types import Action


async def dry_run(settings: Settings, redis: Any, path: Path, recipients: Sequence[str],
                  sender: str | None = None) -> str:
    """Classify and decide for each recipient, reading (never writing) Redis state."""
    try:
        message = Message.parse(normalise(path.read_bytes()))
    except OSError as exc:
        raise HeedError(f"{path}: cannot read: {exc.strerror}") from None
    except MessageRejected as exc:
        raise HeedError(f"{path}: {exc}") from None
    if sender is None:
        sender = email.utils.parseaddr(message.get("From"))[1]
    policy = load_policies(settings.policies)
    clock = SystemClock()
    state = State(redis, Keys(settings.redis.prefix), clock, secret=erase_secret(settings))
    now = clock.now()
    lines = [f"policy {policy.version}; envelope sender <{sender}>; "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(now))}"]
    # The finisher's facts need no token key: a throwaway one, nothing is signed for real.
    finisher = UnsubscribeAndSign(
        TokenSigner((UnsubscribeKey("dry-run", os.urandom(32)),), clock, 86400.0),
        DkimSigner(settings.dkim, clock) if settings.dkim else None,
        public_url=settings.http.public_url, mailto_domain=settings.unsubscribe.mailto_domain)
    prepared = finisher.prepare(message)
    snapshots = await state.snapshots(list(recipients), domains=policy.guards_domains)
    for rcpt, snapshot in zip(recipients, snapshots, strict=True):
        early = classify(policy, sender, rcpt, None)
        stream = classify(policy, sender, rcpt, message) or policy.default_stream
        # The bulk-sender gate as the mail path applies it: unsigned or without a body link.
        d = gate(policy.streams[stream], decide(policy, stream, snapshot, now),
                 prepared.facts(policy.streams[stream]), now)
        verb = d.action.value
        if d.action is Action.DROP and d.drop_mode is not None:
            verb = f"drop ({d.drop_mode.value}" + (
                ", 550 5.7.1 at RCPT)" if early is not None and d.rejects_at_rcpt else ")")
        if d.action is Action.DELAY and d.until is not None:
            verb += " until " + time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(d.until))
        if d.shadow:
            verb += " [shadow mode]"
        lines.append(f"{rcpt}: stream {stream}: {verb}")
        lines.append(f"  decided at: {'RCPT (envelope)' if early is not None else 'DATA'}")
        for reason in d.reasons or ():
            lines.append(f"  because {reason.code}: {reason.detail}")
        if not d.reasons:
            lines.append("  because no rule had an opinion: the stream's default applies")
    return "\n".join(lines)
