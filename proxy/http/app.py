"""The HTTP application: routes, health, readiness and metrics; run in heed's event loop."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from proxy.http.preferences import PreferenceCentre
from proxy.http.unsubscribe import Unsubscribe
from proxy.metrics import CONTENT_TYPE, Metrics
from proxy.policy_store import PolicyStore
from proxy.state import State
from proxy.tokens import TokenSigner

log = logging.getLogger("heed.http")

Ready = Callable[[], Awaitable[dict[str, bool]]]

# On every answer, errors included: nothing cached, nothing leaked, nothing framed.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "form-action 'self'; frame-ancestors 'none'",
}
# A one-click body is 26 bytes (RFC 8058 §3.1); anything large is not one.
MAX_BODY = 64 * 1024


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def counted(metrics: Metrics, page: str, handler: Handler) -> Handler:
    """``handler`` counted in heed_http_requests_total{page, result} by its answer:
    shown (a GET answered), changed (a POST done, 303 included), bad (4xx), unavailable (5xx)."""

    def result(method: str, status: int) -> str:
        if status >= 500:
            return "unavailable"
        if status >= 400:
            return "bad"
        return "changed" if method == "POST" else "shown"

    async def run(request: web.Request) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # a redirect after a change, or an HTTP error
            metrics.http_request(page, result(request.method, exc.status))
            raise
        metrics.http_request(page, result(request.method, response.status))
        return response

    return run


async def _secure(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def make_app(*, tokens: TokenSigner, state: State, metrics: Metrics,
             ready: Ready | None = None, policies: PolicyStore | None = None,
             public_url: str = "") -> web.Application:
    """The aiohttp app: /u/{token}, /p/{token} (with ``policies``), /healthz, /readyz (runs
    ``ready``) and /metrics."""
    app = web.Application(client_max_size=MAX_BODY)
    app.on_response_prepare.append(_secure)
    unsub = Unsubscribe(tokens, state, metrics, policies)

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        try:
            checks = await ready() if ready else {}
        except Exception:  # noqa: BLE001 - a failing check means not ready, never a 500
            log.warning("readiness check failed", exc_info=True)
            checks = {"checks": False}
        ok = all(checks.values())
        return web.Response(text=json.dumps(checks) + "\n", status=200 if ok else 503,
                            content_type="application/json")

    async def prometheus(request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    # add_get also answers HEAD through the same handler (aiohttp sends no body).
    app.router.add_get("/u/{token}", unsub.show)
    app.router.add_post("/u/{token}", unsub.one_click)
    if policies is not None:
        centre = PreferenceCentre(tokens, state, policies, public_url=public_url)
        app.router.add_get("/p/{token}", counted(metrics, "preferences", centre.show))
        app.router.add_post("/p/{token}", counted(metrics, "preferences", centre.change))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", prometheus)
    return app


async def start_http(app: web.Application, host: str, port: int, *,
                     reuse_port: bool = False) -> web.AppRunner:
    """Serve ``app`` on HOST:PORT inside the running loop; ``await runner.cleanup()`` stops it."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True, reuse_port=reuse_port).start()
    return runner
