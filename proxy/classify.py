"""Which stream a message belongs to, from its envelope and (once DATA is in) its headers."""

from __future__ import annotations

from fnmatch import fnmatchcase

from proxy.policy.model import Classifier, Policy
from proxy.types import Headers


def classify(policy: Policy, sender: str, recipient: str, headers: Headers | None) -> str | None:
    """The first matching rule's stream, else the default; None when it depends on missing headers.

    At RCPT time (``headers is None``) a rule that needs headers and whose envelope part matches
    might match once DATA arrives, so the stream cannot be known yet: None (decide at DATA).
    """
    domain = recipient.rpartition("@")[2].lower()
    for rule in policy.classification:
        if not _envelope_matches(rule, sender.lower(), domain):
            continue
        if not rule.needs_headers:
            return rule.stream
        if headers is None:
            return None
        stream = _header_stream(rule, policy, headers)
        if stream is not None:
            return stream
    return policy.default_stream


def _envelope_matches(rule: Classifier, sender: str, domain: str) -> bool:
    if rule.senders and not any(fnmatchcase(sender, g) for g in rule.senders):
        return False
    return not rule.domains or any(fnmatchcase(domain, g) for g in rule.domains)


def _header_stream(rule: Classifier, policy: Policy, headers: Headers) -> str | None:
    for name, glob in rule.headers:
        if not any(fnmatchcase(v.strip().lower(), glob) for v in headers.get_all(name)):
            return None
    if rule.stream_header is None:
        return rule.stream
    # The header names the stream itself; a name that is not a stream falls through to the
    # next rule (and in the end to default_stream), never to "no rules apply".
    for value in headers.get_all(rule.stream_header):
        if value.strip().lower() in policy.streams:
            return value.strip().lower()
    return None
