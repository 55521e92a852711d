"""The HTTP application: routes, health, readiness and metrics; run in heed's event loop."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from aiohttp import web

from proxy.http.unsubscribe import Unsubscribe
from proxy.metrics import Metrics
from proxy.state import State
from proxy.tokens import TokenSigner

Ready = Callable[[], Awaitable[dict[str, bool]]]


def make_app(*, tokens: TokenSigner, state: State, metrics: Metrics,
             ready: Ready | None = None) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    unsub = Unsubscribe(tokens, state, metrics)

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        checks = await ready() if ready else {}
        ok = all(checks.values())
        return web.Response(text=json.dumps(checks) + "\n", status=200 if ok else 503,
                            content_type="application/json")

    async def prometheus(request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    # aiohttp answers HEAD through the GET route, with the same status and no body.
    app.router.add_get("/u/{token}", unsub.show)
    app.router.add_post("/u/{token}", unsub.one_click)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", prometheus)
    return app


async def start_http(app: web.Application, host: str, port: int, *,
                     reuse_port: bool = False) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True, reuse_port=reuse_port).start()
    return runner
