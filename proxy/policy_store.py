"""Holds the policy in force; a reload that fails keeps the last good one (and says so)."""

from __future__ import annotations

import logging
from pathlib import Path

from proxy.errors import PolicyError
from proxy.policy import Policy, load_policies

log = logging.getLogger("heed.policy")


class PolicyStore:
    """The current policy, swapped whole on a successful reload (SIGHUP)."""

    def __init__(self, directory: Path, policy: Policy | None = None) -> None:
        self.directory = directory
        # Loading at construction means a bad file keeps heed from starting.
        self.current: Policy = policy if policy is not None else load_policies(directory)
        self.last_errors: list[str] = []
        _warn(self.current)

    def reload(self) -> bool:
        """Load the directory again; on errors keep the last good policy and log them."""
        try:
            policy = load_policies(self.directory)
        except PolicyError as exc:
            self.last_errors = exc.errors
            log.error(
                "policy reload failed; keeping version %s",
                self.current.version,
                extra={"errors": exc.errors},
            )
            for line in exc.errors:
                log.error("policy error: %s", line)
            return False
        self.last_errors = []
        old = self.current.version
        self.current = policy
        log.info("policy reloaded: %s -> %s", old, policy.version)
        _warn(policy)
        return True


def _warn(policy: Policy) -> None:
    for line in policy.warnings:
        log.warning("policy warning: %s", line)
