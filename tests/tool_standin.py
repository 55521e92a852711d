"""A real HTTP server on loopback standing in for the marketing tool: it records what it gets."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

from aiohttp import web

from proxy.embedded_redis import free_port


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class ToolStandIn:
    """aiohttp on 127.0.0.1 in a thread of its own; ``replies`` are answered in turn (then 200),
    ``delays`` (seconds) hold the matching replies back, to make the caller time out."""

    replies: list[int] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    got: list[Request] = field(default_factory=list)
    answered: list[int] = field(default_factory=list)  # the status of each answer sent

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        n = len(self.got)
        self.got.append(Request(request.method, request.path_qs, dict(request.headers), body))
        if n < len(self.delays) and self.delays[n]:
            await asyncio.sleep(self.delays[n])
        status = self.replies[n] if n < len(self.replies) else 200
        if 300 <= status < 400:
            location = request.query.get("to", "/")
            self.answered.append(status)
            return web.Response(status=status, headers={"Location": location})
        self.answered.append(status)
        return web.Response(status=status, text="ok" if status == 200 else "no")

    def start(self) -> ToolStandIn:
        self._thread.start()

        async def boot() -> None:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

        asyncio.run_coroutine_threadsafe(boot(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():  # never started
            self._loop.close()
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def posts(self) -> list[Request]:
        return [r for r in self.got if r.method == "POST"]
