"""The preference centre at /p/{token}: GET shows the choices, POST changes one (then redirects).

The signed token in the path is the capability (its own purpose: an unsubscribe
token does not open it). Each form also carries an HMAC nonce bound to that token
and its time, and a POST whose Origin is another site is refused, so a page
elsewhere cannot change a person's choices even when it knows the link.

A GET changes nothing, not even the engagement record: link scanners and mail
security gateways fetch every link of a message, so a GET says nothing about a
person. A POST that changes a choice is a person acting, so it counts as a visit
(engagement kind "preference-visit"), which lifecycle rules read; reading or
downloading one's own data is not engagement with the mail and is not counted.

The centre shows only the lists the person joined (a consent, or a refusal of it);
after "leave everything" it shows that state and the way back: subscribing again
is an explicit act, recorded as consent with the proof "preference centre".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from multidict import MultiDictProxy

from proxy import privacy
from proxy.errors import StateUnavailable, TokenError
from proxy.http.data_page import data_page
from proxy.http.i18n import negotiate
from proxy.http.pages import message_page
from proxy.http.prefs_i18n import PREFS
from proxy.http.prefs_pages import (
    FREQUENCIES,
    Row,
    View,
    centre_page,
    erase_confirm_page,
    erased_page,
    form_error_page,
    gone_page,
)
from proxy.http.unsubscribe import BAD_FORM
from proxy.http.unsubscribe import html as _html
from proxy.policy_store import PolicyStore
from proxy.state import State
from proxy.tokens import PREFERENCES, TokenClaims, TokenSigner, mask_address
from proxy.types import GLOBAL_SCOPE, PersonState

log = logging.getLogger("heed.http")

NONCE_LIFETIME = 86400.0  # a form left open a day still works; older ones ask to reload
PAUSES = {"pause30": 30, "pause90": 90}
# After a change the page announces it (Post/Redirect/Get: a reload does not resubmit).
STATUS = {"save": "saved", "pause30": "saved", "pause90": "saved", "resume": "saved",
          "leave": "saved", "rejoin": "rejoined"}
VISIT = "preference-visit"
PROOF = "preference centre"  # the source of a consent given again here


def html(text: str, status: int = 200) -> web.Response:
    """A centre page. Its forms must send a real Origin: under the app-wide "no-referrer"
    a browser sends ``Origin: null`` (Fetch §3.1 "serializing a request origin"), which
    is also what a cross-site page with that policy sends, so here the policy is
    "same-origin" (the token still never leaves the site in a Referer)."""
    response = _html(text, status)
    response.headers["Referrer-Policy"] = "same-origin"
    return response


class PreferenceCentre:
    """Handlers for /p/{token}."""

    def __init__(self, tokens: TokenSigner, state: State, policies: PolicyStore, *,
                 public_url: str = "") -> None:
        self.tokens = tokens
        self.state = state
        self.policies = policies
        # Domain-separated from the suppression digests that share the secret.
        self._form_key = hmac.new(state.secret, b"heed-form-v1", hashlib.sha256).digest()
        parts = urlsplit(public_url)
        self._origin = f"{parts.scheme}://{parts.netloc}" if parts.netloc else ""

    # --- checks ---------------------------------------------------------------------
    def _claims(self, request: web.Request) -> TokenClaims | None:
        try:
            return self.tokens.verify(request.match_info["token"], PREFERENCES)
        except TokenError:
            return None

    def nonce(self, token: str, at: float | None = None) -> str:
        """A form nonce: the time and an HMAC over the path token and that time."""
        ts = str(int(self.state.clock.now() if at is None else at))
        return f"{ts}.{self._tag(token, ts)}"

    def _tag(self, token: str, ts: str) -> str:
        mac = hmac.new(self._form_key, f"{token}|{ts}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac[:16]).rstrip(b"=").decode()

    def _form_ok(self, request: web.Request, token: str, nonce: str) -> bool:
        # Browsers send Origin with every POST and Sec-Fetch-Site where they support it;
        # a client that sends neither (curl, an old browser) still needs the nonce.
        origin = request.headers.get("Origin")
        if origin is not None and origin not in (f"{request.scheme}://{request.host}",
                                                 self._origin):
            return False  # another site, or "null" (an opaque or no-referrer origin)
        if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            return False
        ts, _, tag = nonce.partition(".")
        if not ts.isdigit() or not hmac.compare_digest(self._tag(token, ts), tag):
            return False
        age = self.state.clock.now() - int(ts)
        return -300 <= age <= NONCE_LIFETIME

    # --- GET ------------------------------------------------------------------------
    async def show(self, request: web.Request) -> web.Response:
        """GET/HEAD: the person's choices. Changes nothing (scanners fetch links too)."""
        lang = negotiate(request.headers.get("Accept-Language"))
        claims = self._claims(request)
        if claims is None:
            return html(message_page(lang, "bad"), 400)
        try:
            person = await self.state.snapshot(claims.address)
        except StateUnavailable:
            return html(message_page(lang, "later"), 503)
        if person.suppressed:
            return html(gone_page(lang))
        status = request.query.get("done", "")
        view = self._view(lang, claims, person, request.match_info["token"],
                          status if status in STATUS.values() else "")
        return html(centre_page(view, self.state.clock.now()))

    def _rows(self, person: PersonState, lang: str = "en") -> tuple[Row, ...]:
        left = person.refusals.get(GLOBAL_SCOPE)
        rows = []
        for s in self.policies.current.streams.values():
            refusal = person.refusals.get(s.list)
            if not s.marketing or not (s.list in person.consents or refusal is not None
                                       or not s.consent_required):
                continue  # never joined: nothing to show, nothing to switch
            rows.append(Row(s.name, s.label(lang), s.description(lang),
                            on=s.name not in person.prefs.off and s.list not in person.prefs.off,
                            refused=left is not None or refusal is not None, list=s.list,
                            can_rejoin=refusal is not None and refusal.kind == "unsubscribe"))
        return tuple(rows)

    def _view(self, lang: str, claims: TokenClaims, person: PersonState, token: str,
              status: str) -> View:
        left = person.refusals.get(GLOBAL_SCOPE)
        return View(lang=lang, masked=mask_address(claims.address),
                    rows=self._rows(person, lang), frequency=person.prefs.frequency or "",
                    paused_until=person.prefs.paused_until,
                    left_at=left.at if left is not None else None,
                    nonce=self.nonce(token), status=status,
                    can_rejoin=left is not None and left.kind == "unsubscribe")

    # --- POST -----------------------------------------------------------------------
    async def change(self, request: web.Request) -> web.StreamResponse:
        """POST: one form's change; then 303 back to the page (or the erase pages, the file)."""
        lang = negotiate(request.headers.get("Accept-Language"))
        claims = self._claims(request)
        if claims is None:
            return html(message_page(lang, "bad"), 400)
        token = request.match_info["token"]
        try:
            form = await request.post()
        except BAD_FORM:  # undecodable (charset, encoding): the sender's error, not a 500
            return html(form_error_page(lang), 400)
        if not self._form_ok(request, token, str(form.get("nonce", ""))):
            return html(form_error_page(lang), 403)
        action = str(form.get("action", ""))
        try:
            return await self._act(request, lang, claims, token, action, form)
        except StateUnavailable:
            log.warning("preference change not recorded: redis unavailable")
            return html(message_page(lang, "later"), 503)

    async def _act(self, request: web.Request, lang: str, claims: TokenClaims, token: str,
                   action: str, form: MultiDictProxy[Any]) -> web.StreamResponse:
        address, state = claims.address, self.state
        if action == "erase":  # step one asks; only the second POST erases
            return html(erase_confirm_page(lang, mask_address(address), self.nonce(token)))
        if action == "erase-confirm":
            lists = {s.list for s in self.policies.current.streams.values() if s.marketing}
            await privacy.erase(state, address, [
                t for name in sorted(lists) for t in self.tokens.verp_all(address, name)])
            return html(erased_page(lang))
        person = await state.snapshot(address)
        if person.suppressed:
            return html(gone_page(lang))
        if action == "save":
            frequency = str(form.get("frequency", ""))
            if frequency not in {v for v, _ in FREQUENCIES}:
                return html(form_error_page(lang), 400)
            await state.set_preferences(address, off=self._off(person, request, form),
                                        frequency=frequency or None)
        elif action in PAUSES:
            until = state.clock.now() + PAUSES[action] * 86400.0
            await state.set_preferences(address, paused_until=until)
        elif action == "resume":
            await state.set_preferences(address, paused_until=None)
        elif action == "leave":
            await state.refuse(address, "unsubscribe", channel="preference-centre")
        elif action.startswith("rejoin:"):
            if not await self._rejoin(request, lang, person, address,
                                      action.removeprefix("rejoin:")):
                return html(form_error_page(lang), 400)
            action = "rejoin"
        elif action in ("download", "view"):  # own data: not engagement with the mail
            data = await privacy.export(state, address, self.policies.current, lang)
            if action == "view":
                return html(data_page(lang, data))
            return web.Response(
                body=json.dumps(data, ensure_ascii=False, indent=2).encode("utf-8"),
                content_type="application/json", charset="utf-8",
                headers={"Content-Disposition": 'attachment; filename="my-data.json"'})
        else:
            return html(form_error_page(lang), 400)
        await state.engage(address, kind=VISIT)
        raise web.HTTPSeeOther(f"{request.path}?done={STATUS[action]}")

    async def _rejoin(self, request: web.Request, lang: str, person: PersonState,
                      address: str, scope: str) -> bool:
        """Lift the person's own unsubscribe (of a list, or ``*``) and record their consent
        again with this page as its proof. A complaint or a bounce is not lifted here."""
        refusal = person.refusals.get(scope)
        if refusal is None or refusal.kind != "unsubscribe":
            return False
        rows = [r for r in self._rows(person, lang)
                if (scope == GLOBAL_SCOPE and r.list not in person.refusals) or r.list == scope]
        if not await self.state.rejoin(address, None if scope == GLOBAL_SCOPE else scope,
                                       PROOF):
            return False
        wording = PREFS[lang]["rejoin"]
        for list_name in dict.fromkeys(r.list for r in rows):
            label = next(r.label.text for r in rows if r.list == list_name)
            await self.state.grant(address, list_name, source=PROOF, ip=request.remote or "",
                                   text=f"{wording}: {label}")
        return True

    def _off(self, person: PersonState, request: web.Request,
             form: MultiDictProxy[Any]) -> set[str]:
        """Streams switched off: the shown, switchable ones left unticked, plus any others
        already off (a list switched off elsewhere stays off)."""
        ticked = {str(v) for v in form.getall("on", [])}
        shown = {r.name for r in self._rows(person) if not r.refused}
        return (set(person.prefs.off) - shown) | (shown - ticked)

