"""bench/edge.py runs: both client kinds get every reply heed gives (a wrong one raises)."""

from __future__ import annotations

import pytest

from bench.edge import per_message


@pytest.mark.parametrize("pipelined", [False, True])
async def test_the_edge_bench_runs(pipelined: bool) -> None:
    assert await per_message(40, 4, 3, pipelined) > 0
