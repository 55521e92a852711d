"""The upstream MTA: a pool of connections (pool), replies read in order (wire), transactions."""

from proxy.relay.pool import MAX_IDLE, Refused, SmtpUpstream

__all__ = ["MAX_IDLE", "Refused", "SmtpUpstream"]
