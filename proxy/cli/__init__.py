"""The `heed` command, one module per group of commands; ``command.py`` parses and dispatches."""

from proxy.cli.command import build_parser, main
from proxy.cli.common import provider_guard, redis_for, settings_from

__all__ = ["build_parser", "main", "provider_guard", "redis_for", "settings_from"]
