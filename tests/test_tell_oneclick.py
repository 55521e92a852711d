"""The one-click POST's own guards, against real HTTP peers on loopback: what it refuses, what
it reads, and that one bad tool link never stalls the others."""

from __future__ import annotations

import pytest

from proxy.tell.oneclick import OneClick


@pytest.mark.parametrize("url", [
    "https://[64:ff9b::a00:1]/u",  # NAT64 (RFC 6052) of 10.0.0.1
    "https://[64:ff9b::7f00:1]/u",  # NAT64 of 127.0.0.1
    "https://[64:ff9b:1::a00:1]/u",  # local-use NAT64 prefix (RFC 8215)
    "https://[2002:a00:1::1]/u",  # 6to4 (RFC 3056) of 10.0.0.1
    "https://[::a00:1]/u",  # IPv4-compatible (RFC 4291 §2.5.5.1) of 10.0.0.1
])
async def test_an_ipv6_address_that_carries_a_private_ipv4_is_refused(url: str) -> None:
    # SSRF: on a network with a NAT64 gateway or a 6to4 relay, these reach the IPv4 inside.
    client = OneClick((), 1.0)
    try:
        got = await client.post(url)
    finally:
        await client.close()
    assert not got.ok and not got.retry and "tell.allow" in got.detail, got
