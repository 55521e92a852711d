"""The policy as data: streams, their ordered rule tables, silence thresholds, classification."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from proxy.policy.bulk import BulkRules
from proxy.policy.lifecycle import DAY, STAGES, Silence, Threshold
from proxy.types import Action, DropMode, PersonState

FALLBACK = "en"  # a label missing in the page's language is shown in English

if TYPE_CHECKING:
    from proxy.policy.conditions import Condition

__all__ = ["DAY", "STAGES", "Classifier", "Policy", "Rule", "Silence", "Stream", "Text",
           "Threshold", "lifecycle_stage"]

def lifecycle_stage(source: Stream | Silence, state: PersonState, now: float) -> str:
    """The person's lifecycle stage under a stream's (or a bare) silence thresholds."""
    silence = source.silence if isinstance(source, Stream) else source
    return silence.stage(state, now)


@dataclass(frozen=True)
class Text:
    """Words for a person, and the language they are in (it may be the fallback's)."""

    text: str
    lang: str


def _pick(texts: dict[str, str], lang: str) -> Text | None:
    for choice in (lang, FALLBACK):
        if texts.get(choice):
            return Text(texts[choice], choice)
    return None


@dataclass(frozen=True)
class Rule:
    """One row of a stream's table: if ``condition`` matches (for people in ``stages``), act."""

    condition: Condition
    action: Action
    drop_mode: DropMode | None = None  # `then: reject|discard`; None -> the stream's `drop`
    delay: float | None = None  # `then: {delay: 2d}`; None -> the condition's release time
    stages: frozenset[str] = frozenset()  # empty: applies in every stage
    where: str = ""  # "file:line", for people reading decisions

    @property
    def name(self) -> str:
        return self.condition.name


@dataclass(frozen=True)
class Stream:
    """A kind of mail with its own consent list, rule table and defaults."""

    name: str
    marketing: bool = True
    list: str = ""  # the consent list; "" -> the stream's name
    drop: DropMode = DropMode.REJECT
    unsubscribe: str = "replace"  # "replace" | "keep" | "off"
    shadow: bool = False  # decide and record, but deliver
    # Tell the tool of each refusal through the unsubscribe links it offered (proxy/tell/).
    sync_back: bool = False
    default: Action = Action.DELIVER  # when no rule has an opinion
    consent_required: bool = True
    rules: tuple[Rule, ...] = ()
    silence: Silence = field(default_factory=Silence)
    # What a person reads, per page language: a label and a one-line description.
    labels: dict[str, str] = field(default_factory=dict, hash=False)
    descriptions: dict[str, str] = field(default_factory=dict, hash=False)
    bulk: BulkRules = field(default_factory=BulkRules)  # providers' bulk-sender rules
    # What heed hears on its own (docs/engagement.md): tracked links, the open image.
    track_clicks: bool = False
    track_clicks_exclude: tuple[str, ...] = ()  # URL globs left as they are
    track_opens: bool = False
    # The re-permission question by language (en, vi, ar, th); missing ones: heed's own.
    repermission_text: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.list:
            object.__setattr__(self, "list", self.name)
        if not self.marketing and self.bulk.unsigned != "allow":
            # Transactional mail is never held back by marketing rules.
            object.__setattr__(self, "bulk", BulkRules(unsigned="allow",
                                                       feedback_id=self.bulk.feedback_id,
                                                       from_domains=self.bulk.from_domains))

    def label(self, lang: str) -> Text:
        """The stream's name for a person reading ``lang`` (English, then its name, if none)."""
        return _pick(self.labels, lang) or Text(self.list, FALLBACK)

    def description(self, lang: str) -> Text:
        """The one-line description in ``lang`` (English, then empty, if none)."""
        return _pick(self.descriptions, lang) or Text("", lang)

    @property
    def needs_state(self) -> bool:
        """Whether deciding needs the person's state: rules read it, and marketing always
        checks the suppression of erased addresses."""
        return bool(self.rules) or self.marketing


@dataclass(frozen=True)
class Classifier:
    """A classification rule: every match key given must match; first matching rule wins."""

    stream: str | None = None  # the stream it names...
    stream_header: str | None = None  # ...or a header whose value names the stream
    senders: tuple[str, ...] = ()  # lower-case globs on the envelope sender; any may match
    domains: tuple[str, ...] = ()  # lower-case globs on the recipient's domain
    headers: tuple[tuple[str, str], ...] = ()  # (field name, lower-case glob on its value)
    where: str = ""

    @property
    def needs_headers(self) -> bool:
        return bool(self.headers) or self.stream_header is not None


@dataclass(frozen=True)
class Policy:
    """Every policy file of a directory, merged and validated."""

    version: str
    streams: dict[str, Stream]
    default_stream: str
    classification: tuple[Classifier, ...] = ()
    files: tuple[Path, ...] = ()
    warnings: tuple[str, ...] = ()  # file:line, worth fixing but not stopping for

    def stream_of_list(self, list_name: str) -> Stream | None:
        """The first marketing stream whose consent list is ``list_name``."""
        return next((s for s in self.streams.values() if s.marketing and s.list == list_name),
                    None)

    def list_label(self, list_name: str, lang: str) -> Text:
        """What a person reads for a consent list: its stream's label, or the list's name."""
        stream = self.stream_of_list(list_name)
        return stream.label(lang) if stream is not None else Text(list_name, FALLBACK)

    @cached_property
    def guards_domains(self) -> bool:
        """Whether a rule reads domain complaints (then snapshots fetch them too)."""
        return any(r.name == "domain_guard" for s in self.streams.values() for r in s.rules)

    @cached_property
    def guards_providers(self) -> bool:
        """Whether a rule reads the recipient's provider's throttling (an MX lookup)."""
        return any(r.name == "provider_guard" for s in self.streams.values() for r in s.rules)
