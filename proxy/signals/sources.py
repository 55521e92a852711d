"""Where a stream's answers can come from: silence is only an answer when heed can hear one."""

from __future__ import annotations

from proxy.policy import Policy, Stream
from proxy.settings import Settings

NO_SOURCE = "no engagement source is configured for this stream"


def sources(settings: Settings, stream: Stream) -> list[str]:
    """What can tell heed that a person of ``stream`` answered (empty: heed is deaf there)."""
    out = []
    if stream.track_clicks:
        out.append("tracked clicks")
    if settings.replies.address:
        out.append(f"replies to {settings.replies.address}@{settings.unsubscribe.mailto_domain}")
    w = settings.webhooks
    hooks = [name for name, on in (
        ("ses", w.ses_enabled), ("sendgrid", bool(w.sendgrid_public_key)),
        ("mailgun", bool(w.mailgun_signing_key)),
        ("postmark", bool(w.postmark_path_secret or (w.postmark_username and
                                                     w.postmark_password))))
        if on]
    if hooks:
        out.append(f"webhooks ({', '.join(hooks)})")
    if settings.api.tokens:
        out.append("the events API")
    return out


def has_silence(stream: Stream) -> bool:
    return stream.silence.lapsing is not None or stream.silence.inactive is not None


def deaf_streams(settings: Settings, policy: Policy) -> list[str]:
    """A warning for each stream whose silence thresholds no source of answers can break."""
    return [f"stream {s.name!r} has silence thresholds but {NO_SOURCE}: its people will turn "
            "lapsing and inactive whatever they do. Turn on track_clicks, route replies to heed "
            "(replies.address), configure a webhook or an API token, or import engagement "
            "(heed engage import)"
            for s in policy.streams.values()
            if s.marketing and has_silence(s) and not sources(settings, s)]
