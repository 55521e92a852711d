"""One message's body, parsed once; per recipient: tracked links, a trap link, the ask block."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

from proxy.copy import ask
from proxy.copy.head import Head
from proxy.copy.links import Rules, Template, fill, html_template, link_id, links, text_template
from proxy.copy.mime import Body, TextPart, parse_body
from proxy.message import Message
from proxy.policy import Stream
from proxy.tokens import CLICK, OPEN, REPERMISSION, TokenSigner

TRAP = "-"  # the link id of the hidden trap link: only machines follow it
# Invisible to people, to screen readers (aria-hidden) and to keyboard focus
# (tabindex=-1, and display:none is never focusable): nobody can follow it by accident.
_TRAP = ('<a href="{url}" aria-hidden="true" tabindex="-1" style="display:none!important;'
         'mso-hide:all;font-size:0;line-height:0;max-height:0;overflow:hidden"></a>')
_PIXEL = '<img src="{url}" width="1" height="1" alt="" style="border:0;width:1px;height:1px">'


def copy_id() -> str:
    """A short random name for one copy (48 bits): its clicks are told apart by it."""
    return base64.urlsafe_b64encode(os.urandom(6)).decode("ascii")


@dataclass(frozen=True)
class ClickTarget:
    """What a click token names besides the person: the stream, the copy, the destination."""

    stream: str
    copy: str
    link: str  # link_id(destination), or TRAP

    def encode(self) -> str:
        return f"{self.stream}/{self.copy}/{self.link}"

    @classmethod
    def decode(cls, text: str) -> ClickTarget | None:
        parts = text.split("/")
        return cls(*parts) if len(parts) == 3 and all(parts) else None


class PersonalBody:
    """The body cut once per message; ``render`` makes one recipient's body from it."""

    def __init__(self, message: Message, tokens: TokenSigner, public_url: str,
                 head: Head | None = None) -> None:
        """``head``: the message's header block, read already (proxy/copy/head.py)."""
        self.tokens = tokens
        self.public_url = public_url
        self.body: Body = parse_body(message.header_block, message.body, head)
        self._templates: dict[str, list[Template]] = {}
        self._has_links: dict[str, bool] = {}  # stream -> a tracked link in some part

    @property
    def unparsed(self) -> int:
        return self.body.unparsed

    def templates(self, stream: Stream) -> list[Template]:
        """Each text part's template under this stream's rules (computed once per stream)."""
        found = self._templates.get(stream.name)
        if found is None:
            rules = Rules(self.public_url, stream.track_clicks_exclude)
            found = self._templates[stream.name] = [
                (html_template if p.subtype == "html" else text_template)(p.text, rules)
                if stream.track_clicks else [p.text] for p in self.body.parts]
        return found

    def destinations(self, stream: Stream) -> dict[str, str]:
        """link id -> destination of every tracked link (stored before the copies go)."""
        return {link_id(u): u for t in self.templates(stream) for u in links(t)}

    def changes(self, stream: Stream, ask_block: bool) -> bool:
        """Whether ``render`` can differ from the body as it came: a body without a tracked
        link, without the open image and without the ask is relayed as it is."""
        return bool(self.body.parts) and (
            stream.track_opens or ask_block or (stream.track_clicks and self._tracked(stream)))

    def _tracked(self, stream: Stream) -> bool:
        found = self._has_links.get(stream.name)
        if found is None:
            found = self._has_links[stream.name] = any(
                not isinstance(piece, str) for t in self.templates(stream) for piece in t)
        return found

    def render(self, stream: Stream, recipient: str, *, ask_block: bool = False) -> bytes:
        """The recipient's body: links through /c/, the trap, the open image, the question."""
        copy = copy_id()
        made: dict[str, str] = {}

        def tracked(url: str) -> str:
            new = made.get(url)
            if new is None:
                new = made[url] = self._url(CLICK, recipient, ClickTarget(
                    stream.name, copy, link_id(url)).encode(), "c")
            return new

        templates = self.templates(stream)
        texts = {id(p): fill(t, tracked) for p, t in zip(self.body.parts, templates, strict=True)}
        first_html = next((p for p in self.body.parts if p.subtype == "html"), None)
        # The trap only where there are links to sweep: a copy without any stays as it came.
        if first_html is not None and ((stream.track_clicks and made) or stream.track_opens):
            texts[id(first_html)] = self._hidden(stream, recipient, copy, texts[id(first_html)],
                                                 trap=stream.track_clicks and bool(made))
        if ask_block:
            yes = self._url(REPERMISSION, recipient, stream.name, "r")
            no = f"{self.public_url}/u/{self.tokens.make(recipient, stream.list)}"
            own = dict(stream.repermission_text)
            for part in self.body.parts:
                texts[id(part)] = ask.insert(part, texts[id(part)], yes, no, own)

        def text_of(part: TextPart) -> str:
            return texts[id(part)]

        return self.body.render(text_of)

    def _hidden(self, stream: Stream, recipient: str, copy: str, text: str,
                trap: bool) -> str:
        at = ask.after_body_tag(text)
        if trap:
            url = self._url(CLICK, recipient, ClickTarget(stream.name, copy, TRAP).encode(), "c")
            text = text[:at] + _TRAP.format(url=url) + text[at:]
        if stream.track_opens:
            pixel = self._url(OPEN, recipient, f"{stream.name}/{copy}", "o")
            end = text.lower().rfind("</body")
            end = end if end >= 0 else len(text)
            text = text[:end] + _PIXEL.format(url=pixel) + text[end:]
        return text

    def _url(self, purpose: str, recipient: str, what: str, path: str) -> str:
        return f"{self.public_url}/{path}/{self.tokens.make(recipient, what, purpose=purpose)}"
