"""A minimal aiosmtpd pass-through relay: the "plain relay" heed is compared with.

It does what any relay must (accept, forward, answer 250 only after the
upstream accepted) and nothing heed adds (no policy, no Redis, no rewrite, no DKIM).
"""

from __future__ import annotations

import argparse
import asyncio

from aiosmtpd.smtp import SMTP

from proxy.errors import UpstreamError
from proxy.relay import SmtpUpstream
from proxy.settings import UpstreamSettings


class PassThrough:
    def __init__(self, upstream: SmtpUpstream) -> None:
        self.upstream = upstream

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: ANN001
        try:
            refused = await self.upstream.send(envelope.mail_from, envelope.rcpt_tos,
                                               envelope.original_content)
        except UpstreamError as exc:
            return f"{exc.code} relay failed"
        return "250 OK" if len(refused) < len(envelope.rcpt_tos) else "554 refused"


async def main(listen: int, upstream_port: int) -> None:
    upstream = SmtpUpstream(UpstreamSettings(host="127.0.0.1", port=upstream_port,
                                             pool_size=16))
    handler = PassThrough(upstream)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="relay.bench", loop=loop), "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    import uvloop

    p = argparse.ArgumentParser()
    p.add_argument("listen", type=int)
    p.add_argument("upstream", type=int)
    a = p.parse_args()
    uvloop.run(main(a.listen, a.upstream))
