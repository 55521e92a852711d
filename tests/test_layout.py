"""STYLE.md's module size: no module of heed over ~400 lines (split along a real seam)."""

from __future__ import annotations

from pathlib import Path

PROXY = Path(__file__).resolve().parent.parent / "proxy"
MOST = 400


def test_no_module_is_over_400_lines() -> None:
    long = {str(p.relative_to(PROXY.parent)): n for p in sorted(PROXY.rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > MOST}
    assert long == {}
