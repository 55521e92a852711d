"""Typed settings, built once at start-up from config/heed.yaml, environment and flags.

Environment variables override config keys: ``HEED_<SECTION>__<KEY>`` (double
underscore between levels), e.g. ``HEED_UPSTREAM__HOST=mta.internal``,
``HEED_REDIS__URL=redis://redis:6379/0``. Values are parsed as YAML scalars.
One module per group of sections (its dataclasses and how they are read);
``load.py`` puts them together.
"""

from proxy.settings.bulk import DnsSettings, DoctorSettings, ProviderSettings
from proxy.settings.edges import HttpSettings, SmtpSettings, UpstreamSettings
from proxy.settings.load import DEFAULT_CONFIG, NOT_CONFIG, Settings, load_settings
from proxy.settings.signals import (
    ApiSettings,
    BounceSettings,
    ClickSettings,
    ReplySettings,
    WebhookSettings,
    verp_domain,
)
from proxy.settings.signing import DkimKey, UnsubscribeKey, UnsubscribeSettings
from proxy.settings.storage import AuditSettings, QueueSettings, RedisSettings
from proxy.settings.tell import TellSettings
from proxy.settings.values import parse_duration, parse_hostport

__all__ = [
    "DEFAULT_CONFIG", "NOT_CONFIG", "ApiSettings", "AuditSettings", "BounceSettings",
    "ClickSettings", "DkimKey", "DnsSettings", "DoctorSettings", "HttpSettings",
    "ProviderSettings", "QueueSettings", "RedisSettings", "ReplySettings", "Settings",
    "SmtpSettings", "TellSettings", "UnsubscribeKey", "UnsubscribeSettings",
    "UpstreamSettings", "WebhookSettings", "load_settings", "parse_duration",
    "parse_hostport", "verp_domain",
]
