"""Words for people in the policy: a stream's label and description per page language."""

from __future__ import annotations

from typing import Any, Protocol

import yaml
from yaml import Node

from proxy.types import LANGUAGES


class Reporter(Protocol):
    """What the loader's file object offers (proxy/policy/nodes.py PolicyFile)."""

    warnings: list[str]

    def at(self, node: Node) -> str: ...
    def err(self, node: Node, message: str) -> None: ...
    def text(self, node: Node, what: str) -> Any: ...
    def mapping(self, node: Node, what: str,
                allowed: tuple[str, ...] | None = None) -> dict[str, tuple[Node, Node]]: ...


def words(f: Reporter, node: Node, what: str, bad: object) -> Any:
    """One text (taken as English) or ``{language: text}``; ``bad`` when it is not valid."""
    if isinstance(node, yaml.ScalarNode):
        text = f.text(node, what)
        return bad if text is bad else {"en": text.strip()}
    out: dict[str, str] = {}
    for lang, (_, vnode) in f.mapping(node, what, LANGUAGES).items():
        text = f.text(vnode, f"{what}.{lang}")
        if text is not bad and not text.strip():
            f.err(vnode, f"{what}.{lang} must not be empty")
        elif text is not bad:
            out[lang] = text.strip()
    return out


def missing_languages(f: Reporter, name: str, node: Node, labels: dict[str, str]) -> None:
    """A marketing stream's pages fall back to English where its label is missing: warn."""
    missing = [lang for lang in LANGUAGES if lang not in labels]
    if missing:
        shown = "the English label" if "en" in labels else "the list name"
        f.warnings.append(f"{f.at(node)}: stream {name!r} has no label in "
                          f"{', '.join(missing)}; its pages show {shown} there")
