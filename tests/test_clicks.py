"""Tracked links over real SMTP, HTTP and Redis: redirect, person or scanner, refusals."""

from __future__ import annotations

import http.client
import http.server
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from proxy.clock import ManualClock
from proxy.copy.links import link_id
from proxy.embedded_redis import free_port
from proxy.explain import explain
from tests.conftest import Upstream
from tests.harness import HeedThread, make_settings, marketing_policy, policy_dir

pytestmark = pytest.mark.cluster  # each Redis test runs on one server and on a Cluster

POLICY = marketing_policy(stream="""\
    track_clicks: true
    track_clicks_exclude: ["https://shop.example/account/*"]
    silence:
      lapsing: {sends: 3}
      inactive: {sends: 6}
""")
SENDER = "offers@news.example.com"
TRACKED = re.compile(r"http://127\.0\.0\.1:\d+/c/[A-Za-z0-9_-]+")


def message(to: str, links: list[str], n: int = 1) -> str:
    anchors = "".join(f'<p><a href="{u}">link {i}</a></p>' for i, u in enumerate(links))
    return (f"From: Shop <{SENDER}>\r\nTo: {to}\r\nSubject: Offer {n}\r\n"
            f"Message-ID: <offer-{n}-{to}@news.example.com>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/html; charset=utf-8\r\n\r\n"
            f"<html><body>{anchors}</body></html>\r\n")


class Site:
    """heed with its HTTP side, a capture upstream, and a movable clock."""

    def __init__(self, heed: HeedThread, upstream: Upstream, clock: ManualClock) -> None:
        self.heed = heed
        self.upstream = upstream
        self.clock = clock

    @property
    def http(self) -> tuple[str, int]:
        listen = self.heed.settings.http.listen
        assert listen is not None
        return listen

    def grant(self, address: str) -> None:
        assert self.heed.heed is not None
        self.heed.call(self.heed.heed.state.grant(address, "marketing"))

    def send(self, to: str, links: list[str], n: int = 1) -> str:
        """Send one message; the HTML of the copy the upstream got."""
        before = len(self.upstream.received)
        with self.heed.smtp() as c:
            c.sendmail(SENDER, [to], message(to, links, n))
        self.heed.settle()
        got = self.upstream.received[before:]
        assert len(got) == 1
        part = next(p for p in got[0].message.walk() if p.get_content_type() == "text/html")
        return str(part.get_content())

    def request(self, url: str, method: str = "GET", agent: str = "Mozilla/5.0"
                ) -> tuple[int, str, str]:
        """(status, Location, body) without following the redirect."""
        path = urlsplit(url).path
        conn = http.client.HTTPConnection(*self.http, timeout=10)
        conn.request(method, path, headers={"User-Agent": agent})
        resp = conn.getresponse()
        body = resp.read().decode("utf-8", "replace")
        conn.close()
        self.heed.settle()
        return resp.status, resp.getheader("Location") or "", body

    def explain(self, address: str) -> str:
        h = self.heed.heed
        assert h is not None
        return self.heed.call(explain(h.state, h.audit, address, now=self.clock.now(),
                                      policy=h.policies.current))

    def kinds(self, address: str) -> dict[str, Any]:
        h = self.heed.heed
        assert h is not None
        return dict(self.heed.call(h.state.snapshot(address)).engagement)


@pytest.fixture
def site(redis_url: str, upstream: Upstream, tmp_path: Path,
         clock: ManualClock) -> Iterator[Site]:
    port = free_port()
    settings = make_settings(
        redis_url=redis_url, upstream_port=upstream.port,
        policies=policy_dir(tmp_path, POLICY),
        http={"listen": f"127.0.0.1:{port}", "public_url": f"http://127.0.0.1:{port}"},
        clicks={"scanner_user_agents": ["Mimecast"]})
    heed = HeedThread(settings, clock).start()
    yield Site(heed, upstream, clock)
    heed.stop()


LINKS = ["https://shop.example/sale?a=1&b=2", "https://shop.example/new",
         "https://shop.example/account/me", "mailto:shop@shop.example"]


def tracked(html: str) -> list[str]:
    return TRACKED.findall(html)


def test_a_person_clicks_and_is_redirected_at_once(site: Site) -> None:
    site.grant("ana@example.org")
    html = site.send("ana@example.org", LINKS)
    links = tracked(html)
    assert len(links) == 3  # trap + two tracked; the account page and mailto: as they were
    assert "https://shop.example/account/me" in html and "mailto:shop@shop.example" in html
    trap, sale, new = links
    site.clock.advance(120)
    status, location, _ = site.request(sale)
    assert (status, location) == (302, "https://shop.example/sale?a=1&b=2")
    assert "click" in site.kinds("ana@example.org")
    assert "machine-click" not in site.kinds("ana@example.org")
    assert "engaged: click via tracked link" in site.explain("ana@example.org")


def test_a_scanner_sweep_is_machine(site: Site) -> None:
    """HEAD, then every link within a second: all machine, and silence still counts."""
    site.grant("ben@example.org")
    html = site.send("ben@example.org", LINKS)
    site.clock.advance(300)
    first = tracked(html)[1]
    assert site.request(first, "HEAD")[0] == 302
    for url in tracked(html):
        site.request(url)
    kinds = site.kinds("ben@example.org")
    assert "click" not in kinds and "machine-click" in kinds
    text = site.explain("ben@example.org")
    assert "machine-click via tracked link (HEAD request)" in text
    for n in range(2, 5):
        site.send("ben@example.org", LINKS, n)
    assert "marketing: lapsing: 4 sends since engagement, never engaged" in \
        site.explain("ben@example.org")


@pytest.mark.parametrize("how", ["soon", "burst", "trap", "agent"])
def test_each_machine_sign(site: Site, how: str) -> None:
    site.grant("cem@example.org")
    html = site.send("cem@example.org", LINKS)
    trap, sale, new = tracked(html)
    agent = "Mozilla/5.0"
    if how != "soon":
        site.clock.advance(120)
    if how == "burst":
        assert site.request(sale)[0] == 302  # the first looks like a person...
        site.clock.advance(0.3)
        url = new  # ...another link of the same copy 0.3 s later does not
    elif how == "trap":
        assert site.request(trap)[:2] == (200, "")
        url = sale
    else:
        url = sale
        agent = "Mozilla/5.0 Mimecast" if how == "agent" else agent
    status, location, _ = site.request(url, agent=agent)
    assert status == 302 and location.startswith("https://shop.example/")
    why = {"soon": "0 s after delivery", "burst": "several links of one copy within 1.0 s",
           "trap": "the hidden trap link", "agent": "scanner user agent 'Mimecast'"}[how]
    assert f"machine-click via tracked link ({why}" in site.explain("cem@example.org")


def test_forged_and_bit_flipped_tokens_get_one_plain_400(site: Site, redis_url: str) -> None:
    site.grant("dan@example.org")
    html = site.send("dan@example.org", LINKS)
    url = tracked(html)[1]
    token = url.rsplit("/", 1)[1]
    flipped = [token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1:]
               for i in range(0, len(token), 7)]
    bad = [*flipped, token + "A", token[:-1], "x", "A" * 200]
    site.clock.advance(120)
    pages = set()
    for t in bad:
        status, location, body = site.request(url.rsplit("/", 1)[0] + "/" + t)
        assert (status, location) == (400, ""), t
        pages.add(body)
    assert len(pages) == 1 and "does not work" in pages.pop()
    # A destination changed behind heed's back does not redirect either.
    h = site.heed.heed
    assert h is not None
    key = h.keys.link(link_id("https://shop.example/sale?a=1&b=2"))
    assert site.heed.call(h.redis.get(key))
    site.heed.call(h.redis.set(key, "https://evil.example/"))
    assert site.request(url)[:2] == (400, "")
    assert site.kinds("dan@example.org") == {}


@pytest.mark.skipif(os.environ.get("HEED_SKIP_BROWSER") == "1", reason="HEED_SKIP_BROWSER=1")
async def test_a_real_browser_follows_a_tracked_link(site: Site, browser: Any) -> None:
    """The delivered copy opened in Chromium; a click on its link lands on the destination."""
    landed: list[str] = []

    class Landing(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            landed.append(self.path)
            body = b"<!doctype html><title>Sale</title><h1 id=sale>The sale</h1>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Landing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    dest = f"http://127.0.0.1:{server.server_address[1]}/sale?from=mail"
    try:
        site.grant("eva@example.org")
        html = site.send("eva@example.org", [dest])
        site.clock.advance(120)
        page = await browser.new_page()
        await page.set_content(html)
        await page.get_by_text("link 0").click()
        await page.wait_for_selector("#sale")
        assert page.url == dest and landed[0] == "/sale?from=mail"
        await page.close()
    finally:
        server.shutdown()
        server.server_close()
    site.heed.settle()
    assert "click" in site.kinds("eva@example.org")
    assert "machine-click" not in site.kinds("eva@example.org")


def test_open_image_records_an_open_that_does_not_count(redis_url: str, upstream: Upstream,
                                                        tmp_path: Path,
                                                        clock: ManualClock) -> None:
    port = free_port()
    settings = make_settings(
        redis_url=redis_url, upstream_port=upstream.port,
        policies=policy_dir(tmp_path, POLICY.replace("track_clicks: true",
                                                     "track_clicks: false\n    track_opens: true")),
        http={"listen": f"127.0.0.1:{port}", "public_url": f"http://127.0.0.1:{port}"})
    heed = HeedThread(settings, clock).start()
    try:
        s = Site(heed, upstream, clock)
        s.grant("ida@example.org")
        html = s.send("ida@example.org", LINKS)
        assert not tracked(html) and "https://shop.example/new" in html
        image = re.search(r'<img src="(http://127\.0\.0\.1:\d+/o/[A-Za-z0-9_-]+)" width="1" '
                          r'height="1"', html)
        assert image and html.index(image.group(1)) > html.index("https://shop.example/new")
        status, _, _ = s.request(image.group(1))
        assert status == 200 and "open" in s.kinds("ida@example.org")
        assert "marketing: active: 1 sends since engagement, never engaged" in \
            s.explain("ida@example.org")  # opens are not counted (Apple MPP opens everything)
        assert s.request(image.group(1)[:-3] + "AAA")[0] == 200  # an image either way
    finally:
        heed.stop()
