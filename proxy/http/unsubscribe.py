"""One-click unsubscribe: POST records the no (RFC 8058 §3.2); GET and HEAD change nothing."""

from __future__ import annotations

import logging

from aiohttp import web

from proxy.errors import StateUnavailable, TokenError
from proxy.http.i18n import negotiate
from proxy.http.pages import confirm_page, done_page, message_page
from proxy.metrics import Metrics
from proxy.state import State
from proxy.tokens import TokenClaims, TokenSigner, mask_address

log = logging.getLogger("heed.http")

HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "form-action 'self'; frame-ancestors 'none'",
}
MAX_BODY = 64 * 1024


def html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8",
                        headers=HEADERS)


class Unsubscribe:
    """Handlers for /u/{token}."""

    def __init__(self, tokens: TokenSigner, state: State, metrics: Metrics) -> None:
        self.tokens = tokens
        self.state = state
        self.metrics = metrics

    def _claims(self, request: web.Request) -> TokenClaims | None:
        try:
            return self.tokens.verify(request.match_info["token"])
        except TokenError:
            return None

    async def show(self, request: web.Request) -> web.Response:
        """GET/HEAD: a confirm page. Link scanners fetch this; it must change nothing."""
        lang = negotiate(request.headers.get("Accept-Language"))
        claims = self._claims(request)
        self.metrics.unsubscribe.labels(request.method, "ok" if claims else "bad").inc()
        if claims is None:
            return html(message_page(lang, "bad"), 400)
        return html(confirm_page(lang, request.match_info["token"], claims.list,
                                 mask_address(claims.address)))

    async def one_click(self, request: web.Request) -> web.Response:
        """POST: record the refusal durably, then answer 200. No cookie, no auth, no redirect."""
        lang = negotiate(request.headers.get("Accept-Language"))
        claims = self._claims(request)
        if claims is None:
            self.metrics.unsubscribe.labels("POST", "bad").inc()
            return html(message_page(lang, "bad"), 400)
        if request.content_length is not None and request.content_length > MAX_BODY:
            return html(message_page(lang, "bad"), 413)
        try:
            form = await request.post()
        except ValueError:
            form = None
        # RFC 8058 §3.2: the body carries List-Unsubscribe=One-Click.
        if form is None or form.get("List-Unsubscribe") != "One-Click":
            self.metrics.unsubscribe.labels("POST", "bad-body").inc()
            return html(message_page(lang, "bad"), 400)
        try:
            await self.state.refuse(claims.address, "unsubscribe", list=claims.list,
                                    channel="one-click")
        except StateUnavailable:
            self.metrics.unsubscribe.labels("POST", "unavailable").inc()
            log.warning("one-click not recorded: redis unavailable")
            return html(message_page(lang, "later"), 503)
        self.metrics.unsubscribe.labels("POST", "recorded").inc()
        return html(done_page(lang, claims.list, mask_address(claims.address)))
