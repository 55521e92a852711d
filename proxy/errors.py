"""heed's exceptions: one shallow tree; foreign errors are mapped at the boundary."""


class HeedError(Exception):
    """Base of every error heed raises on purpose."""


class ConfigError(HeedError):
    """The service configuration is invalid; ``errors`` holds "file:line: message" lines."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


class PolicyError(HeedError):
    """A policy file is invalid; ``errors`` holds "file:line: message" lines."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


class StateUnavailable(HeedError):
    """Redis could not be read or written: marketing mail must not go out unchecked."""


class UpstreamError(HeedError):
    """The upstream MTA did not accept a message."""

    def __init__(self, code: int, message: str, *, temporary: bool) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message
        self.temporary = temporary


class TokenError(HeedError):
    """An unsubscribe or preference token is malformed, forged, expired or retired."""
