"""One-click unsubscribe: POST records the no (RFC 8058 §3.2); GET and HEAD change nothing.

The page a person opens offers two buttons, each one POST: leave this list, or stop
all marketing email. A mail client's one-click POST (no `scope`) leaves the list.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qs

from aiohttp import web

from proxy.errors import StateUnavailable, TokenError
from proxy.http.i18n import negotiate
from proxy.http.pages import confirm_page, done_page, message_page
from proxy.metrics import Metrics
from proxy.policy.model import Text
from proxy.policy_store import PolicyStore
from proxy.state import State
from proxy.tokens import PREFERENCES, TokenClaims, TokenSigner, mask_address

log = logging.getLogger("heed.http")

# What aiohttp raises for a form it cannot decode: a malformed multipart body (ValueError),
# an unknown charset (LookupError), an unknown transfer or content encoding (RuntimeError).
BAD_FORM = (ValueError, LookupError, RuntimeError)


# The address of `heed doctor`'s one-click test token: .invalid can never be a mailbox
# (RFC 2606 §2), so no person's "no" is ever skipped by this.
DRY_RUN_ADDRESS = "heed-doctor@heed.invalid"


def html(text: str, status: int = 200) -> web.Response:
    """A UTF-8 HTML answer (the app adds the security headers to every response)."""
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


async def is_one_click(request: web.Request) -> bool:
    """Whether the body carries ``List-Unsubscribe=One-Click`` (RFC 8058 §3.1)."""
    try:
        if request.content_type == "multipart/form-data":
            form = await request.post()
            return form.get("List-Unsubscribe") == "One-Click"
        # RFC 8058 asks for form-urlencoded; an untyped or text/plain body of the same
        # words is read alike, so a sloppy mailbox provider still gets the person out.
        text = (await request.read()).decode("utf-8", "replace").strip()
        return "One-Click" in parse_qs(text).get("List-Unsubscribe", [])
    except BAD_FORM:
        return False


async def _field(request: web.Request, name: str) -> object:
    try:
        if request.content_type == "multipart/form-data":
            return (await request.post()).get(name)
        text = (await request.read()).decode("utf-8", "replace").strip()
        return parse_qs(text).get(name, [""])[0]
    except BAD_FORM:
        return None


async def channel(request: web.Request) -> str:
    """"page" when the confirm page's button posted (open + press), else "one-click"."""
    return "page" if await _field(request, "via") == "page" else "one-click"


async def everything(request: web.Request) -> bool:
    """Whether the page's "stop all marketing email" button posted (scope=all)."""
    return await _field(request, "scope") == "all"


class Unsubscribe:
    """Handlers for /u/{token}."""

    def __init__(self, tokens: TokenSigner, state: State, metrics: Metrics,
                 policies: PolicyStore | None = None) -> None:
        self.tokens = tokens
        self.state = state
        self.metrics = metrics
        self.policies = policies

    def _label(self, claims: TokenClaims, lang: str) -> Text:
        """The list's name as the person knows it, in their language (the policy's label)."""
        if self.policies is None:
            return Text(claims.list, "en")
        return self.policies.current.list_label(claims.list, lang)

    def _claims(self, request: web.Request) -> TokenClaims | None:
        try:
            return self.tokens.verify(request.match_info["token"])
        except TokenError:
            return None

    def _prefs_url(self, claims: TokenClaims) -> str:
        """The person's preference centre: a token of its own purpose, from verified claims."""
        return "/p/" + self.tokens.make(claims.address, claims.list, purpose=PREFERENCES)

    def _count(self, request: web.Request, result: str) -> None:
        self.metrics.unsubscribe.labels(request.method, result).inc()
        self.metrics.http_request("unsubscribe", result)

    async def show(self, request: web.Request) -> web.Response:
        """GET/HEAD: a confirm page. Link scanners fetch this; it must change nothing."""
        lang = negotiate(request.headers.get("Accept-Language"))
        claims = self._claims(request)
        if claims is None:
            self._count(request, "bad")
            # One page for every failure: no hint whether the address is known.
            return html(message_page(lang, "bad"), 400)
        self._count(request, "shown")
        return html(confirm_page(lang, self._label(claims, lang), mask_address(claims.address),
                                 self._prefs_url(claims)))

    async def one_click(self, request: web.Request) -> web.Response:
        """POST: record the refusal durably, then answer 200. No cookie, no auth, no redirect."""
        lang = negotiate(request.headers.get("Accept-Language"))
        claims = self._claims(request)
        if claims is None:
            self._count(request, "bad")
            return html(message_page(lang, "bad"), 400)
        if not await is_one_click(request):
            # RFC 8058 §3.2: the POST names the one-click action; a bare POST is not one.
            self._count(request, "bad-body")
            return html(message_page(lang, "bad"), 400)
        all_marketing = await everything(request)
        if claims.address == DRY_RUN_ADDRESS:
            # `heed doctor`'s test token: the whole one-click path answers, nothing is kept.
            self._count(request, "dry-run")
            return html(done_page(lang, self._label(claims, lang), mask_address(claims.address),
                                  self._prefs_url(claims), everything=all_marketing))
        try:
            new = await self.state.refuse(claims.address, "unsubscribe",
                                          list=None if all_marketing else claims.list,
                                          channel=await channel(request))
        except StateUnavailable:
            # Never 200 unless recorded: the person must be told to try again.
            self._count(request, "unavailable")
            log.warning("one-click not recorded: redis unavailable")
            return html(message_page(lang, "later"), 503)
        # Idempotent: a second click keeps the first refusal and answers the same.
        self._count(request, "recorded" if new else "repeat")
        return html(done_page(lang, self._label(claims, lang), mask_address(claims.address),
                              self._prefs_url(claims), everything=all_marketing))
