"""Each recipient's copy built and relayed, copies of one message side by side; replies sorted."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from proxy.errors import UpstreamError
from proxy.finish import PreparedMessage
from proxy.policy import Stream
from proxy.providers.guard import ProviderGuard
from proxy.recorder import Delivery
from proxy.tell.offer import Offer


class Upstream(Protocol):
    async def send(
        self, sender: str, recipients: Sequence[str], data: bytes
    ) -> dict[str, tuple[int, str]]: ...


@dataclass
class _Copy:
    stream: Stream
    recipients: list[str]
    data: bytes
    sender: str = ""  # MAIL FROM of this copy: the tool's, or a VERP return path
    signed: bool = False  # a marketing copy with a DKIM-covered one-click (see AuditEntry)
    verp: str | None = None  # the VERP token in ``sender``, if it is one
    body_link: str = ""  # marketing: "yes", "inserted" or "no" (a visible unsubscribe link)
    offer: Offer | None = None  # the tool's own unsubscribe links it replaced


async def relay_copies(upstream: Upstream, providers: ProviderGuard | None,
                       prepared: PreparedMessage, sender: str,
                       targets: Sequence[tuple[Stream, str]], asked: set[str]) -> Delivery:
    """Relay every copy: who got it, who was refused for good, who must wait.

    Copies go out at once, each on its own pooled connection (proxy/relay/pool.py):
    a message's reply waits for its slowest copy, not for the sum of them."""
    copies: list[_Copy] = []
    shared: dict[str, _Copy] = {}
    for stream, r in targets:
        if prepared.per_recipient(stream):
            data, signed = prepared.build_copy(stream, r, ask=r in asked)
            token = prepared.verp_token(stream, r, sender)
            copies.append(_Copy(stream, [r], data, prepared.return_path(stream, r, sender),
                                signed, token,
                                prepared.facts(stream).body_link,
                                prepared.tool_offer(stream, r)))
        elif stream.name in shared:
            shared[stream.name].recipients.append(r)
        else:
            shared[stream.name] = _Copy(stream, [r], prepared.build(stream, None), sender)
            copies.append(shared[stream.name])
    if len(copies) == 1:  # the common case: no task to create and schedule
        results = [await _send(upstream, copies[0])]
    else:
        results = await asyncio.gather(*(_send(upstream, c) for c in copies))
    if providers is not None and any(e is not None or rej for rej, e in results):
        # Transactional replies count too: the provider judges the sender, not the stream.
        await providers.hear_replies(
            [(r, f"{code} {text}") for (rej, _), c in zip(results, copies, strict=True)
             for r, (code, text) in rej.items()]
            + [(r, e) for (_, e), c in zip(results, copies, strict=True) if e is not None
               for r in c.recipients])
    out = Delivery()
    for copy, (rejected, error) in zip(copies, results, strict=True):
        for r in copy.recipients:
            if error is not None:
                out.failed[r] = error
            elif r in rejected and rejected[r][0] < 500:
                out.failed[r] = " ".join(map(str, rejected[r]))  # deferred: hold, retry
            elif r in rejected:
                out.refused[r] = rejected[r]
            else:
                out.sent.append(r)
                if copy.signed:
                    out.signed.add(r)
                if copy.verp:
                    out.verp[r] = (copy.verp, copy.stream.list, sender)
                if copy.offer:
                    out.offers[r] = (copy.stream.list, copy.offer)
                if copy.body_link:
                    out.body_link[r] = copy.body_link
    return out


async def _send(upstream: Upstream, copy: _Copy
                ) -> tuple[dict[str, tuple[int, str]], str | None]:
    try:
        return await upstream.send(copy.sender, copy.recipients, copy.data), None
    except UpstreamError as exc:
        if exc.temporary:
            return {}, f"{exc.code} {exc.message}"
        return {r: (exc.code, exc.message) for r in copy.recipients}, None
