"""The last changes to each copy: unsubscribe headers per recipient, then DKIM, always last."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple, Protocol

from proxy.bulk.bodylink import Readable, has_unsubscribe_link, readable, unsubscribe_urls
from proxy.bulk.feedback import feedback_field, feedback_value, set_feedback_id
from proxy.bulk.footer import language, with_footer
from proxy.bulk.gate import CopyFacts
from proxy.copy.head import Head, read_head
from proxy.copy.personal import PersonalBody
from proxy.dkim import DkimSigner, from_domain
from proxy.message import Message, fit_long_lines, has_long_lines, parse_fields, split
from proxy.policy import Stream
from proxy.rewrite import add_unsubscribe, field_name, header_fields, unsubscribe_fields, without
from proxy.tell.offer import Offer, personal, read_offer
from proxy.tokens import TokenSigner


class Copy(NamedTuple):
    """One recipient's copy: its bytes, and whether it carries a signed one-click."""

    data: bytes
    signed: bool  # what signed_one_click(data) says, known without reading data when it can


class PreparedMessage(Protocol):
    def per_recipient(self, stream: Stream) -> bool:
        """True when each recipient needs its own copy (its own token)."""
        ...

    def build(self, stream: Stream, recipient: str | None, *, ask: bool = False) -> bytes:
        """The bytes to relay for one recipient (or for all, when recipient is None);
        ``ask``: this copy is the re-permission message, and asks (proxy/copy/ask.py)."""
        ...

    def build_copy(self, stream: Stream, recipient: str, *, ask: bool = False) -> Copy:
        """``build`` for one recipient, with whether the copy's one-click is signed."""
        ...

    def destinations(self, streams: Iterable[Stream]) -> dict[str, str]:
        """link id -> destination of the tracked links of these streams' copies."""
        ...

    def return_path(self, stream: Stream, recipient: str, sender: str) -> str:
        """The MAIL FROM of one recipient's own copy (VERP), or ``sender`` unchanged."""
        ...

    def verp_token(self, stream: Stream, recipient: str, sender: str) -> str | None:
        """The VERP token in that return path (its mapping is stored once sent), or None."""
        ...

    def tool_offer(self, stream: Stream, recipient: str) -> Offer | None:
        """The tool's own unsubscribe links heed replaced in this person's copy (kept once
        sent, for sync-back: proxy/tell/), or None."""
        ...

    def facts(self, stream: Stream) -> CopyFacts:
        """What the bulk-sender gate reads: From domain, the key that signs it, body link."""
        ...


class Finisher(Protocol):
    def prepare(self, message: Message) -> PreparedMessage:
        """Per-message work done once (header parse, DKIM body hash)."""
        ...


class _Marketing:
    """One message: its DKIM body hash taken once, then a copy per recipient."""

    def __init__(self, owner: UnsubscribeAndSign, message: Message) -> None:
        self.owner = owner
        domain = from_domain(message.header_block)
        signer = owner.signer
        if signer and domain and signer.for_domain(domain) and has_long_lines(message.body):
            # Lines over 998 octets get wrapped by some relays on the way, after the
            # signature: a signed copy is re-encoded before it is signed.
            message = Message.parse(fit_long_lines(message.data))
        self.message = message
        self.domain = domain
        # The header fields every copy shares are canonicalized once (RFC 6376 §3.4.2).
        self._canonical: dict[tuple[bytes, bytes], tuple[bytes, bytes]] = {}
        self.dkim = (signer.prepare(self.domain, message.body, self._canonical)
                     if signer and self.domain else None)
        self._verp: dict[tuple[str, str], str] = {}  # (recipient, list) -> VERP token
        self._offer: Offer | None | bool = False  # False: not read yet
        self._feedback: dict[str, bytes | None] = {}  # stream -> its Feedback-ID value
        self._link: bool | None = None
        self._lang: str | None = None
        self._head: Head | None = None  # the header block read once, for everything below
        self._readable: Readable | None = None  # the text parts, decoded once for both
        self._personal: PersonalBody | None = None  # the body cut once, when a copy changes it
        self._kept: dict[frozenset[bytes], bytes] = {}  # the header block less these fields
        self._tool_unsubscribe: bool | None = None  # the tool wrote a List-Unsubscribe

    @property
    def personal(self) -> PersonalBody:
        if self._personal is None:
            self._personal = PersonalBody(self.message, self.owner.tokens, self.owner.public_url,
                                          self.head)
            if self._personal.unparsed:
                self.owner.unparsed(self._personal.unparsed)
        return self._personal

    @property
    def head(self) -> Head:
        """The header block's MIME fields, read once for the link check, the tracked links
        and the footer."""
        if self._head is None:
            self._head = read_head(self.message.header_block)
        return self._head

    @property
    def readable(self) -> Readable:
        """The text parts as the link check and the footer's language read them (parsed once)."""
        if self._readable is None:
            self._readable = readable(self.message.data, self.head)
        return self._readable

    def destinations(self, streams: Iterable[Stream]) -> dict[str, str]:
        out: dict[str, str] = {}
        for stream in streams:
            if stream.track_clicks and self.per_recipient(stream):
                out.update(self.personal.destinations(stream))
        return out

    def per_recipient(self, stream: Stream) -> bool:
        return stream.marketing and (stream.unsubscribe != "off" or self._inserts(stream))

    def body_link(self) -> bool:
        """A visible unsubscribe link in the body as the tool wrote it (read once)."""
        if self._link is None:
            known = [f"{self.owner.public_url}/u/",
                     *unsubscribe_urls(self.message.get_all("List-Unsubscribe"))]
            self._link = has_unsubscribe_link(self.readable, known)
        return self._link

    def facts(self, stream: Stream) -> CopyFacts:
        keys = self.dkim.keys if self.dkim is not None else []
        link = "yes" if self.body_link() else "inserted" if self._inserts(stream) else "no"
        return CopyFacts(self.domain, keys[0].domain if keys else None, link)

    def _inserts(self, stream: Stream) -> bool:
        return (stream.marketing and stream.bulk.body_unsubscribe == "insert"
                and not self.body_link())

    def build(self, stream: Stream, recipient: str | None, *, ask: bool = False) -> bytes:
        return self._build(stream, recipient, ask)[0]

    def build_copy(self, stream: Stream, recipient: str, *, ask: bool = False) -> Copy:
        data, ours = self._build(stream, recipient, ask)
        # heed's own fields under heed's own signature (whose h= always names both, see
        # proxy/dkim.py OVERSIGNED) are a signed one-click when the URL is https; any
        # other copy (the tool's fields kept, no key) is read from its bytes.
        return Copy(data, True if ours else signed_one_click(data))

    def _build(self, stream: Stream, recipient: str | None, ask: bool) -> tuple[bytes, bool]:
        """The copy, and True when it is known to carry a signed one-click of heed's own."""
        headers, body, dkim = self.message.header_block, self.message.body, self.dkim
        ours = False  # heed wrote both unsubscribe fields, the only ones left in the copy
        personal = recipient is not None and self.per_recipient(stream)
        if personal and (stream.track_clicks or stream.track_opens or ask) \
                and self.personal.changes(stream, ask):
            assert recipient is not None
            # Tracked links and the ask block: the body changes before the signature.
            body = self.personal.render(stream, recipient, ask_block=ask)
            if body == self.message.body:
                body = self.message.body  # nothing tracked here: the same bytes, signed as such
        if stream.name not in self._feedback:
            self._feedback[stream.name] = feedback_value(stream, self.message)
        feedback = self._feedback[stream.name]
        if recipient is not None and personal:
            token = self.owner.tokens.make(recipient, stream.list)
            url = f"{self.owner.public_url}/u/{token}"
            if stream.unsubscribe != "off":
                headers, ours = self._unsubscribe(stream, url, token, feedback)
                feedback = None  # in ``headers`` already
            if self._inserts(stream):
                # heed's own unsubscribe footer, after the tracked links (it is never tracked).
                if self._lang is None:
                    self._lang = language(self.readable)
                body = with_footer(self.head, body, url, self._lang)
        if body is not self.message.body and dkim is not None and self.domain is not None \
                and self.owner.signer:
            # The body changed (links, the ask, the footer): this copy gets its own body hash.
            dkim = self.owner.signer.prepare(self.domain, body, self._canonical)
        if feedback is not None:
            headers = set_feedback_id(headers, feedback)
        # DKIM last, after every other change, so h= covers the unsubscribe fields.
        signature = dkim.sign(headers) if dkim is not None else b""
        if not signature and headers is self.message.header_block and body is self.message.body:
            # Nothing to change: relay byte for byte (a message with no empty line
            # after its header block must not gain one).
            return self.message.data, False
        return signature + headers + b"\r\n" + body, ours and bool(signature)

    def _unsubscribe(self, stream: Stream, url: str, token: str, feedback: bytes | None
                     ) -> tuple[bytes, bool]:
        """The header block with both unsubscribe fields and the Feedback-ID, as add_unsubscribe
        then set_feedback_id write it; True when the unsubscribe fields are heed's own."""
        block = self.message.header_block
        mailto = f"unsubscribe+{token}@{self.owner.mailto_domain}"
        if self._tool_unsubscribe is None:
            self._tool_unsubscribe = any(field_name(f) == b"list-unsubscribe"
                                         for f in header_fields(block))
        if stream.unsubscribe == "replace" or (stream.unsubscribe == "keep"
                                               and not self._tool_unsubscribe):
            # The fields every copy keeps are cut once per message; a copy adds its own.
            drop = _THEIRS if feedback is None else _THEIRS_AND_FEEDBACK
            kept = self._kept.get(drop)
            if kept is None:
                kept = self._kept[drop] = without(block, drop)
            if not kept or kept.endswith(b"\r\n"):  # (a block always ends so, split cuts it)
                own = unsubscribe_fields(url, mailto)
                tail = b"" if feedback is None else feedback_field(feedback)
                # RFC 8058 §3.1: the one-click URI is https.
                return kept + own + tail, url.startswith("https://")
        rewritten = add_unsubscribe(block, https_url=url, mailto=mailto,
                                    existing=stream.unsubscribe)
        headers = rewritten.headers
        if feedback is not None:
            headers = set_feedback_id(headers, feedback)
        return headers, not rewritten.kept and url.startswith("https://")

    def return_path(self, stream: Stream, recipient: str, sender: str) -> str:
        """``bounce+TOKEN@DOMAIN`` so a bounce names its recipient (VERP); else ``sender``.

        Kept as is: the null sender (a bounce is never bounced, RFC 5321 §6.1), streams
        without their own per-recipient copies, and a local part over the limit
        (64 octets, RFC 5321 §4.5.3.1.1, unless configured otherwise).
        """
        token = self.verp_token(stream, recipient, sender)
        return sender if token is None else f"bounce+{token}@{self.owner.bounce_domain}"

    def verp_token(self, stream: Stream, recipient: str, sender: str) -> str | None:
        # The compact token (27 octets with "bounce+") always fits the default limit.
        if not self.owner.bounce_domain or not sender or not self.per_recipient(stream):
            return None
        # The mail path asks for the token and for the return path made of it: one HMAC.
        key = (recipient, stream.list)
        token = self._verp.get(key)
        if token is None:
            token = self._verp[key] = self.owner.tokens.verp(recipient, stream.list)
        if len("bounce+" + token) > self.owner.verp_max_local:
            return None
        return token

    def tool_offer(self, stream: Stream, recipient: str) -> Offer | None:
        # Only where heed's own fields replaced the tool's ("keep" leaves the tool's link
        # to the person), only where the stream says so, and only a copy written for
        # this person alone (proxy/tell/offer.py: personal).
        if not (stream.sync_back and stream.unsubscribe == "replace"
                and self.per_recipient(stream)):
            return None
        if self._offer is False:
            self._offer = read_offer(self.message)
        offer = self._offer
        if not isinstance(offer, Offer) or not personal(self.message, recipient):
            return None
        return offer


# The tool's own unsubscribe fields, which heed's replace, and with them its Feedback-ID.
_THEIRS = frozenset((b"list-unsubscribe", b"list-unsubscribe-post"))
_THEIRS_AND_FEEDBACK = _THEIRS | {b"feedback-id"}


class UnsubscribeAndSign:
    """Marketing copies get their own signed one-click token (RFC 8058); every copy DKIM."""

    def __init__(self, tokens: TokenSigner, signer: DkimSigner | None, *, public_url: str,
                 mailto_domain: str, bounce_domain: str | None = None,
                 verp_max_local: int = 64,
                 on_unparsed: Callable[[int], None] | None = None) -> None:
        self.tokens = tokens
        self.signer = signer
        self.public_url = public_url.rstrip("/")
        self.mailto_domain = mailto_domain
        self.bounce_domain = bounce_domain  # None: no VERP, the tool's sender is kept
        self.verp_max_local = verp_max_local
        self.unparsed_parts = 0  # MIME parts passed through untouched
        self._on_unparsed = on_unparsed  # heed_mime_unparsed_parts_total

    def unparsed(self, count: int) -> None:
        self.unparsed_parts += count
        if self._on_unparsed is not None:
            self._on_unparsed(count)

    def prepare(self, message: Message) -> PreparedMessage:
        return _Marketing(self, message)


# The fields signed_one_click reads (only these are decoded, once per copy sent).
_ONE_CLICK_FIELDS = frozenset((b"list-unsubscribe", b"list-unsubscribe-post", b"dkim-signature"))


def signed_one_click(data: bytes) -> bool:
    """Whether a copy carries a working, signed one-click: an https List-Unsubscribe with
    ``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` (RFC 8058 §3.1) and a DKIM
    signature whose h= covers both fields (RFC 8058 §4). Read from the bytes that go out."""
    values: dict[str, list[str]] = {"list-unsubscribe": [], "list-unsubscribe-post": [],
                                    "dkim-signature": []}
    for name, value in parse_fields(split(data)[0], only=_ONE_CLICK_FIELDS):
        values[name.lower()].append(value)
    if not any("<https://" in v for v in values["list-unsubscribe"]):
        return False
    if "List-Unsubscribe=One-Click" not in [v.strip() for v in values["list-unsubscribe-post"]]:
        return False
    for signature in values["dkim-signature"]:
        tags = dict(t.strip().partition("=")[::2] for t in signature.split(";"))
        signed = {h.strip().lower() for h in "".join(tags.get("h", "").split()).split(":")}
        if {"list-unsubscribe", "list-unsubscribe-post"} <= signed:
            return True
    return False
