"""A policy file's YAML nodes read with their place: every problem is reported as file:line."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from yaml import Node

BAD = object()  # a value that failed validation (already reported)
Items = dict[str, tuple[Node, Node]]  # key -> (key node, value node)


class PolicyFile:
    """One policy file's nodes, and a place to report what is wrong with them."""

    def __init__(self, path: Path, errors: list[str], warnings: list[str] | None = None) -> None:
        self.path = path
        self.errors = errors
        self.warnings = [] if warnings is None else warnings
        self._loader = yaml.SafeLoader("")

    def at(self, node: Node) -> str:
        return f"{self.path}:{node.start_mark.line + 1}"

    def err(self, node: Node, message: str) -> None:
        self.errors.append(f"{self.at(node)}: {message}")

    def mapping(self, node: Node, what: str, allowed: tuple[str, ...] | None = None) -> Items:
        """The mapping's entries; wrong type, non-text, duplicate and unknown keys are reported."""
        if not isinstance(node, yaml.MappingNode):
            self.err(node, f"{what} must be a mapping")
            return {}
        items: Items = {}
        for knode, vnode in node.value:
            key = knode.value if isinstance(knode, yaml.ScalarNode) else None
            if not isinstance(key, str):
                self.err(knode, f"{what}: keys must be text")
            elif key in items:
                self.err(knode, f"{what}: {key!r} given twice (first at line "
                                f"{items[key][0].start_mark.line + 1})")
            elif allowed is not None and key not in allowed:
                self.err(knode, f"{what}: unknown key {key!r} (expected one of "
                                f"{', '.join(allowed)})")
            else:
                items[key] = (knode, vnode)
        return items

    def sequence(self, node: Node, what: str) -> list[Node]:
        if not isinstance(node, yaml.SequenceNode):
            self.err(node, f"{what} must be a list")
            return []
        return list(node.value)

    def value(self, node: Node) -> Any:
        if isinstance(node, yaml.ScalarNode) and ":" in node.value and node.tag.endswith(
                (":int", ":float")):
            return node.value  # YAML 1.1 reads 21:00 as the sexagesimal 1260; keep what was written
        return self._loader.construct_object(node, deep=True)

    def text(self, node: Node, what: str, pattern: re.Pattern[str] | None = None) -> Any:
        """A scalar exactly as written (so `yes` stays "yes"), optionally checked by ``pattern``."""
        if not isinstance(node, yaml.ScalarNode):
            self.err(node, f"{what} must be text")
            return BAD
        if pattern is not None and not pattern.match(node.value):
            self.err(node, f"{what} {node.value!r} must be lower-case letters, digits, '_.-'")
            return BAD
        return node.value

    def texts(self, node: Node, what: str) -> Any:
        """One text or a list of them."""
        nodes = node.value if isinstance(node, yaml.SequenceNode) else [node]
        out = tuple(self.text(n, what) for n in nodes)
        if not out:
            self.err(node, f"{what} must not be an empty list")
        return BAD if BAD in out or not out else out

    def convert(self, node: Node, fn: Callable[[Any], Any], what: str) -> Any:
        try:
            return fn(self.value(node))
        except (ValueError, TypeError) as exc:
            self.err(node, f"{what}: {exc}")
            return BAD

    def choice(self, node: Node, what: str, options: tuple[str, ...]) -> Any:
        value = self.text(node, what)
        if value is not BAD and value not in options:
            self.err(node, f"{what} must be one of {', '.join(options)}, not {value!r}")
            return BAD
        return value
