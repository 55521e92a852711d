"""/c/TOKEN (tracked link: redirect at once), /o/TOKEN (open image), /r/TOKEN ("keep sending")."""

from __future__ import annotations

import base64
import logging
from html import escape

from aiohttp import web

from proxy.clock import Clock
from proxy.copy.ask import TEXTS as ASK
from proxy.copy.ask import language
from proxy.errors import StateUnavailable, TokenError
from proxy.http.i18n import negotiate
from proxy.http.pages import frame, message_page
from proxy.http.unsubscribe import html
from proxy.metrics import Metrics
from proxy.signals.clicks import Clicks, Request
from proxy.state import State
from proxy.tokens import REPERMISSION, TokenClaims, TokenSigner, mask_address

log = logging.getLogger("heed.http")

# The smallest transparent GIF (43 bytes): what an open-tracking image answers.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")


def _client(request: web.Request) -> Request:
    return Request(request.method, request.remote or "", request.headers.get("User-Agent", ""))


class ClickPages:
    """Handlers for the links heed puts into a copy."""

    def __init__(self, clicks: Clicks, tokens: TokenSigner, state: State, clock: Clock,
                 metrics: Metrics) -> None:
        self.clicks = clicks
        self.tokens = tokens
        self.state = state
        self.clock = clock
        self.metrics = metrics

    async def click(self, request: web.Request) -> web.StreamResponse:
        """GET/HEAD: record, then redirect at once; a bad token gets one plain 400, never a
        redirect (no open redirect: the destination is the one signed into the copy)."""
        lang = negotiate(request.headers.get("Accept-Language"))
        try:
            click = await self.clicks.follow(request.match_info["token"], _client(request),
                                             self.clock.now())
        except TokenError:
            self.metrics.http_request("click", "bad")
            return html(message_page(lang, "bad"), 400)
        except StateUnavailable:
            # The person still gets where they were going? Not without the destination,
            # which is in Redis: say so plainly.
            self.metrics.http_request("click", "unavailable")
            return html(message_page(lang, "later"), 503)
        self.metrics.http_request("click", click.kind)
        if click.destination is None:  # the trap: nothing to see
            return web.Response(text="", content_type="text/plain")
        # 302 with the destination verbatim: it was the tool's own link (RFC 9110 §15.4.3).
        # Returned, not raised: aiohttp's HTTPFound builds an exception and a text body.
        return web.Response(status=302, headers={"Location": click.destination})

    async def opened(self, request: web.Request) -> web.Response:
        """The 1×1 image: the open is recorded; the image comes either way (it is an image)."""
        try:
            await self.clicks.opened(request.match_info["token"], self.clock.now())
            self.metrics.http_request("open", "shown")
        except (TokenError, StateUnavailable):
            self.metrics.http_request("open", "bad")
        return web.Response(body=PIXEL, content_type="image/gif")

    def _page_lang(self, request: web.Request) -> str:
        return language(negotiate(request.headers.get("Accept-Language")))

    def _asked(self, request: web.Request) -> tuple[str, TokenClaims | web.Response]:
        """The page language, and the token's claims or the one plain 400 page."""
        lang = self._page_lang(request)
        try:
            return lang, self.tokens.verify(request.match_info["token"], REPERMISSION)
        except TokenError:
            self.metrics.http_request("repermission", "bad")
            return lang, html(message_page(lang, "bad"), 400)

    async def keep_page(self, request: web.Request) -> web.Response:
        """GET/HEAD: one button. Changes nothing: scanners fetch every link of the message."""
        lang, claims = self._asked(request)
        if isinstance(claims, web.Response):
            return claims
        t = ASK[lang]
        self.metrics.http_request("repermission", "shown")
        body = (f'<p id="question"><bdi>{escape(mask_address(claims.address))}</bdi></p>'
                '<form method="post"><button type="submit" id="keep" '
                f'aria-describedby="question">{escape(t["yes"])}</button></form>')
        return html(frame(lang, t["title"], body))

    async def keep(self, request: web.Request) -> web.Response:
        """POST: a ``repermission-yes`` engagement (active again); 200, never a redirect."""
        lang, claims = self._asked(request)
        if isinstance(claims, web.Response):
            return claims
        try:
            await self.state.engage(claims.address, kind="repermission-yes",
                                    at=self.clock.now(), source="re-permission message",
                                    stream=claims.list)
        except StateUnavailable:
            self.metrics.http_request("repermission", "unavailable")
            return html(message_page(lang, "later"), 503)
        self.metrics.http_request("repermission", "changed")
        return html(frame(lang, ASK[lang]["title"],
                          f'<p role="status">{escape(ASK[lang]["done"])}</p>'))


def add_clicks(app: web.Application, pages: ClickPages) -> None:
    # add_get also answers HEAD through the same handler (a scanner's check: recorded machine).
    app.router.add_get("/c/{token}", pages.click)
    app.router.add_get("/o/{token}", pages.opened)
    app.router.add_get("/r/{token}", pages.keep_page)
    app.router.add_post("/r/{token}", pages.keep)
