"""What heed hears, for the report: engagement by source, and answers to the re-permission ask."""

from __future__ import annotations

from collections import Counter

from proxy.policy import Policy
from proxy.types import PersonState

# "engaged" audit details read "KIND via SOURCE (why)" (proxy/state.py engage).
SOURCES = (("machine-click", "machine click (filtered)"), ("tracked link", "tracked click"),
           ("reply", "reply"), ("webhook", "webhook"), ("api", "API"), ("import", "import"),
           ("re-permission", "re-permission yes"), ("open image", "tracked open"))
ANSWERS = ("asked", "yes", "no", "no answer")


def source_of(detail: str) -> str:
    """The report's name for how an engagement was heard (its audit detail)."""
    kind, _, rest = detail.partition(" via ")
    if kind == "machine-click":
        return SOURCES[0][1]
    source = rest.split(" (", 1)[0]
    for prefix, label in SOURCES[1:]:
        if source.startswith(prefix):
            return label
    return {"preference-visit": "preference centre", "manual": "manual"}.get(kind, kind)


class Answers:
    """Per stream that re-asks: people asked, and who said yes, no, or nothing since."""

    def __init__(self, policy: Policy) -> None:
        self.streams = [s for s in policy.streams.values()
                        if any(getattr(r.condition, "repermission", False) for r in s.rules)]
        self.counts: dict[str, Counter[str]] = {
            s.name: Counter({a: 0 for a in ANSWERS}) for s in self.streams}

    def add(self, person: PersonState) -> None:
        for s in self.streams:
            asked = person.repermission.get(s.name)
            if asked is None:
                continue
            self.counts[s.name]["asked"] += 1
            yes = person.engagement.get("repermission-yes")
            no = [r for scope, r in person.refusals.items() if scope in (s.list, "*")]
            if yes is not None and yes.at >= asked:
                self.counts[s.name]["yes"] += 1
            elif any(r.at >= asked for r in no):
                self.counts[s.name]["no"] += 1
            else:
                self.counts[s.name]["no answer"] += 1
