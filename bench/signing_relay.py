"""The floor under heed: heed's SMTP edge in, one signed copy per recipient out, nothing else.

heed must give every recipient a copy of their own: the one-click URI names the
recipient (RFC 8058 §3.1) and RFC 8058 §4 wants List-Unsubscribe and
List-Unsubscribe-Post under the DKIM signature, so every copy needs its own
private-key operation. This relay does only that, with heed's own parts, and
nothing else heed does (no policy, no Redis, no audit, no log line, no link
tracking, no footer):

- heed's SMTP edge (proxy/smtp: aiosmtpd with heed's bulk DATA read and address parser);
- per recipient: an HMAC token in a List-Unsubscribe URI, List-Unsubscribe-Post, and an
  RSA-2048 relaxed/relaxed DKIM signature made with heed's own signer (OpenSSL's RSA,
  the body hashed once per message, the shared fields canonicalised once);
- the copies of a message sent side by side on heed's own pooled, pipelining client;
- 250 only after the upstream accepted every copy.

What it reaches in bench/compare.py is what heed would reach if its checks and
records cost nothing: the distance from it to heed is those, the distance from it
to Postfix is the per-copy signature and Python's SMTP.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import ipaddress
import tempfile
from pathlib import Path

from proxy.dkim import DkimSigner, from_domain, generate_key
from proxy.errors import UpstreamError
from proxy.relay import SmtpUpstream
from proxy.rewrite import split_message
from proxy.settings import DkimKey, SmtpSettings, UpstreamSettings
from proxy.smtp.access import Access
from proxy.smtp.server import start_smtp

SECRET = b"bench floor, not a real secret"


class SigningRelay:
    def __init__(self, upstream: SmtpUpstream, signer: DkimSigner) -> None:
        self.upstream, self.signer = upstream, signer
        self._mac = hmac.new(SECRET, digestmod=hashlib.sha256)

    def _copy(self, head: bytes, body: bytes, sign, rcpt: str) -> bytes:  # noqa: ANN001
        mac = self._mac.copy()
        mac.update(rcpt.encode())
        token = base64.urlsafe_b64encode(mac.digest()[:16]).rstrip(b"=")
        own = (b"List-Unsubscribe: <https://u.bench.example/u/" + token + b">\r\n"
               b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")
        return sign(own + head) + own + head + b"\r\n" + body

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: ANN001
        data = envelope.original_content.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        head, body = split_message(data)
        domain = from_domain(head) or ""
        sign = self.signer.prepare(domain, body, {}).sign
        copies = [self._copy(head, body, sign, r) for r in envelope.rcpt_tos]
        try:
            refused = await asyncio.gather(*(self.upstream.send(envelope.mail_from, [r], c)
                                             for r, c in zip(envelope.rcpt_tos, copies,
                                                             strict=True)))
        except UpstreamError as exc:
            return f"{exc.code} relay failed"
        return "250 OK" if not any(refused) else "554 refused"


async def main(listen: int, upstream_port: int, domain: str, key_dir: Path | None) -> None:
    with tempfile.TemporaryDirectory(prefix="floor-") as tmp:
        key_file, _ = generate_key(domain, "bench", key_dir or Path(tmp))
        signer = DkimSigner([DkimKey(domain=domain, selector="bench", key_file=key_file)])
        upstream = SmtpUpstream(UpstreamSettings(host="127.0.0.1", port=upstream_port,
                                                 pool_size=16))
        loopback = [ipaddress.ip_network("127.0.0.0/8")]
        server = await start_smtp(SigningRelay(upstream, signer),
                                  SmtpSettings(listen=("127.0.0.1", listen),
                                               hostname="floor.bench"),
                                  Access(loopback, {}))
        async with server:
            await server.serve_forever()


if __name__ == "__main__":
    import uvloop

    p = argparse.ArgumentParser()
    p.add_argument("listen", type=int)
    p.add_argument("upstream", type=int)
    p.add_argument("--domain", default="news.example.com", help="the From domain it signs for")
    p.add_argument("--key-dir", type=Path, default=None,
                   help="where its new key is written (a temp dir); a test reads it there")
    a = p.parse_args()
    uvloop.run(main(a.listen, a.upstream, a.domain, a.key_dir))
