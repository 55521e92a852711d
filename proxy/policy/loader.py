"""Policy files to a validated Policy; every problem in every file is reported as file:line."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from yaml import Node

from proxy.errors import PolicyError
from proxy.policy import values
from proxy.policy.bulk import BULK_KEYS, read_bulk
from proxy.policy.conditions import CONDITIONS
from proxy.policy.model import Classifier, Policy, Rule, Silence, Stream, Threshold
from proxy.policy.nodes import BAD, PolicyFile
from proxy.policy.words import missing_languages, words
from proxy.types import Action, DropMode

TOP_KEYS = ("version", "default_stream", "streams", "classify")
STREAM_KEYS = ("kind", "label", "description", "list", "consent", "drop", "unsubscribe", "shadow",
               "sync_back", "default", "silence", "rules", "track_clicks", "track_clicks_exclude",
               "track_opens", "repermission_text", *BULK_KEYS)
RULE_KEYS = ("if", "then", "stage", "note")  # every other key is a parameter of the condition
CLASSIFY_KEYS = ("stream", "stream_from_header", "sender", "recipient_domain", "headers", "note")
THEN = {"deliver": (Action.DELIVER, None), "drop": (Action.DROP, None),
        "reject": (Action.DROP, DropMode.REJECT), "discard": (Action.DROP, DropMode.DISCARD),
        "delay": (Action.DELAY, None)}
# Stream and list names end up in Redis keys, URLs and metrics labels: keep them plain.
NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*\Z")


def load_policies(directory: Path) -> Policy:
    """Read ``*.yaml``/``*.yml`` in name order and merge; PolicyError lists every problem."""
    errors: list[str] = []
    warnings: list[str] = []
    if not directory.is_dir():
        raise PolicyError([f"{directory}:1: policy directory does not exist"])
    files = sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml")
                   and p.is_file() and not p.name.startswith("."))
    if not files:
        raise PolicyError([f"{directory}:1: no policy files (*.yaml, *.yml) in the directory"])
    digest = hashlib.sha256()
    merged = _Merged()
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as exc:
            errors.append(f"{path}:1: cannot read: {exc.strerror}")
            merged.unreadable = True
            continue
        digest.update(path.name.encode() + b"\0" + data + b"\0")
        f = PolicyFile(path, errors, warnings)
        try:
            root = yaml.compose(data.decode("utf-8"), Loader=yaml.SafeLoader)
        except UnicodeDecodeError:
            errors.append(f"{path}:1: not UTF-8 text")
            merged.unreadable = True
            continue
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            errors.append(f"{path}:{mark.line + 1 if mark else 1}: invalid YAML: {exc.problem}")
            merged.unreadable = True
            continue
        except yaml.reader.ReaderError as exc:  # a control character YAML forbids (§5.1)
            line = data[:max(0, exc.position)].count(b"\n") + 1
            char = exc.character
            shown = f"U+{char:04X}" if isinstance(char, int) else repr(char)
            errors.append(f"{path}:{line}: invalid YAML: character {shown} is not allowed")
            merged.unreadable = True
            continue
        if root is not None:
            merged.add(f, root)
    policy = merged.finish(files, digest.hexdigest()[:12], errors)
    if errors or policy is None:
        raise PolicyError(errors)
    return dataclasses.replace(policy, warnings=tuple(warnings))


class _Merged:
    """What the files said so far, and where they said it (for "defined twice" errors)."""

    def __init__(self) -> None:
        self.streams: dict[str, tuple[Stream, str]] = {}
        self.default: tuple[str, str] | None = None
        self.label: tuple[str, str] | None = None
        self.classify: list[tuple[Classifier, str]] = []  # with where its `stream:` is
        self.unreadable = False  # a file we could not parse may hold what seems missing

    def add(self, f: PolicyFile, root: Node) -> None:
        top = f.mapping(root, "the file", TOP_KEYS)
        if "version" in top:
            label = f.text(top["version"][1], "version")
            if self.label is not None and label is not BAD and label != self.label[0]:
                f.err(top["version"][1], f"version {label!r} differs from {self.label[0]!r} "
                                         f"at {self.label[1]}")
            elif label is not BAD:
                self.label = (label, f.at(top["version"][1]))
        if "default_stream" in top:
            node = top["default_stream"][1]
            if self.default is not None:
                f.err(node, f"default_stream given twice (also at {self.default[1]})")
            else:
                name = f.text(node, "default_stream", NAME)
                if name is not BAD:
                    self.default = (name, f.at(node))
        if "streams" in top:
            for name, (knode, vnode) in f.mapping(top["streams"][1], "streams").items():
                if not NAME.match(name):
                    f.err(knode, f"stream name {name!r} must be lower-case letters, digits, '_.-'")
                elif name in self.streams:
                    f.err(knode, f"stream {name!r} is already defined at {self.streams[name][1]}")
                else:
                    # Kept even when it has errors, so references to it do not add more.
                    self.streams[name] = (_stream(f, name, vnode), f.at(knode))
        if "classify" in top:
            for node in f.sequence(top["classify"][1], "classify"):
                found = _classifier(f, node)
                if found is not None:
                    self.classify.append(found)

    def finish(self, files: list[Path], digest: str, errors: list[str]) -> Policy | None:
        if self.unreadable:
            return None
        first = f"{files[0]}:1"
        streams = {n: s for n, (s, _) in self.streams.items()}
        for stream in streams.values():
            for rule in stream.rules:
                errors.extend(f"{rule.where}: {p}"
                              for p in rule.condition.problems(stream, streams))
        for classifier, where in self.classify:
            if classifier.stream is not None and classifier.stream not in self.streams:
                errors.append(f"{where}: unknown stream {classifier.stream!r}")
        if self.default is None:
            errors.append(f"{first}: no default_stream in any policy file")
        elif self.default[0] not in self.streams:
            errors.append(f"{self.default[1]}: default_stream {self.default[0]!r} is not a stream")
        if not self.streams:
            errors.append(f"{first}: no streams defined in any policy file")
        if errors or self.default is None:
            return None
        version = f"{self.label[0]}+{digest}" if self.label else digest
        return Policy(version=version, streams=streams,
                      default_stream=self.default[0],
                      classification=tuple(r for r, _ in self.classify), files=tuple(files))


def _stream(f: PolicyFile, name: str, node: Node) -> Stream:
    """The stream as far as it is valid (errors are reported; the policy will not load)."""
    empty = isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")
    items = {} if empty else f.mapping(node, f"stream {name!r}", STREAM_KEYS)
    got: dict[str, Any] = {}

    def take(key: str, read: Callable[[Node], Any]) -> None:
        if key in items:
            value = read(items[key][1])
            if value is not BAD:
                got[key] = value

    take("kind", lambda n: f.choice(n, "kind", ("marketing", "transactional")))
    take("label", lambda n: words(f, n, "label", BAD))
    take("description", lambda n: words(f, n, "description", BAD))
    take("list", lambda n: f.text(n, "list", NAME))
    take("consent", lambda n: f.choice(n, "consent", ("required", "not_required")))
    take("drop", lambda n: f.choice(n, "drop", ("reject", "discard")))
    take("unsubscribe", lambda n: f.choice(n, "unsubscribe", ("replace", "keep", "off")))
    take("shadow", lambda n: f.convert(n, values.flag, "shadow"))
    take("sync_back", lambda n: f.convert(n, values.flag, "sync_back"))
    take("default", lambda n: f.choice(n, "default", ("deliver", "drop")))
    take("silence", lambda n: _silence(f, n))
    take("track_clicks", lambda n: f.convert(n, values.flag, "track_clicks"))
    take("track_clicks_exclude", lambda n: f.convert(n, values.globs, "track_clicks_exclude"))
    take("track_opens", lambda n: f.convert(n, values.flag, "track_opens"))
    take("repermission_text", lambda n: f.convert(n, values.asks, "repermission_text"))
    marketing = got.get("kind", "marketing") == "marketing"
    if marketing:
        missing_languages(f, name, items.get("label", (node, node))[0], got.get("label", {}))
    silence = got.get("silence", Silence())
    if "silence" in items and "silence" not in got:
        # Invalid thresholds were reported; stand-ins keep rules on them from adding errors.
        silence = Silence(lapsing=Threshold(1), inactive=Threshold(1))
    rules: list[Rule] = []
    if "rules" in items:
        for rnode in f.sequence(items["rules"][1], f"stream {name!r}: rules"):
            rule = _rule(f, rnode, silence)
            if rule is not None:
                rules.append(rule)
    return Stream(
        name=name, marketing=marketing, list=got.get("list", name),
        drop=DropMode(got.get("drop", "reject")),
        unsubscribe=got.get("unsubscribe", "replace" if marketing else "off"),
        shadow=got.get("shadow", False), sync_back=got.get("sync_back", marketing),
        track_clicks=got.get("track_clicks", False),
        track_clicks_exclude=got.get("track_clicks_exclude", ()),
        track_opens=got.get("track_opens", False),
        repermission_text=got.get("repermission_text", ()),
        default=Action(got.get("default", "deliver")),
        consent_required=got.get("consent", "required" if marketing else "not_required")
        == "required",
        rules=tuple(rules), silence=silence, labels=got.get("label", {}),
        descriptions=got.get("description", {}), bulk=read_bulk(f, items, marketing, BAD))


def _silence(f: PolicyFile, node: Node) -> Any:
    items = f.mapping(node, "silence", ("lapsing", "inactive", "loyal_days", "engagement"))
    out: dict[str, Any] = {}
    for stage in ("lapsing", "inactive"):
        if stage in items:
            out[stage] = _threshold(f, items[stage][1], f"silence.{stage}")
    if "loyal_days" in items:
        out["loyal_days"] = f.convert(items["loyal_days"][1], values.days, "silence.loyal_days")
    if "engagement" in items:
        out["engagement"] = f.convert(items["engagement"][1], values.kinds, "silence.engagement")
    return BAD if BAD in out.values() or not isinstance(node, yaml.MappingNode) else Silence(
        **out)


def _threshold(f: PolicyFile, node: Node, what: str) -> Any:
    items = f.mapping(node, what, ("sends", "or_days", "min_sends"))
    conv = {"sends": lambda v: values.count(v, 1), "or_days": values.days,
            "min_sends": values.count}
    out = {k: f.convert(v, conv[k], f"{what}.{k}") for k, (_, v) in items.items()}
    if not isinstance(node, yaml.MappingNode) or BAD in out.values():
        return BAD
    if "sends" not in out and "or_days" not in out:
        f.err(node, f"{what} needs sends or or_days")
        return BAD
    return Threshold(**out)


def _rule(f: PolicyFile, node: Node, silence: Silence) -> Rule | None:
    items = f.mapping(node, "rule")
    if not isinstance(node, yaml.MappingNode):
        return None
    if "if" not in items or "then" not in items:
        f.err(node, "a rule needs `if:` (a condition) and `then:` (an action)")
        return None
    cname = f.text(items["if"][1], "if")
    cls = CONDITIONS.get(cname) if cname is not BAD else None
    if cls is None:
        if cname is not BAD:
            f.err(items["if"][1], f"unknown condition {cname!r} (known: {', '.join(CONDITIONS)})")
        return None
    params: dict[str, Any] = {}
    stages: Any = frozenset()
    ok = True
    for key, (knode, vnode) in items.items():
        if key in cls.params:
            params[key] = f.convert(vnode, cls.params[key], f"{cname}.{key}")
        elif key == "stage":
            stages = f.convert(vnode, _stage_filter, "stage")
        elif key not in RULE_KEYS:
            known = ", ".join((*cls.params, *RULE_KEYS)) or "none"
            f.err(knode, f"unknown key {key!r} for condition {cname!r} (expected {known})")
            ok = False
    if "stage" in items:  # the filter, or lifecycle's own parameter: the same stage names
        wanted = params.get("stage", stages)
        for name in sorted(wanted) if wanted is not BAD else ():
            if not silence.can_reach(name):
                f.err(items["stage"][1], f"stage {name!r} needs `silence: {{{name}: ...}}` "
                                         "on the stream")
                ok = False
    for missing in sorted(cls.required - params.keys()):
        f.err(node, f"condition {cname!r} needs {missing!r}")
        ok = False
    then = _then(f, items["then"][1])
    if not ok or then is None or stages is BAD or BAD in params.values():
        return None
    action, mode, delay = then
    if action is Action.DELAY and delay is None and not cls.releases:
        f.err(items["then"][1], f"{cname!r} gives no release time to delay until; "
                                "say how long instead, e.g. `then: {delay: 2d}`")
        return None
    return Rule(condition=cls(**params), action=action, drop_mode=mode, delay=delay,
                stages=stages, where=f.at(node))


def _stage_filter(value: Any) -> frozenset[str]:
    return CONDITIONS["lifecycle"].params["stage"](value)  # the same names as `lifecycle`


def _then(f: PolicyFile, node: Node) -> tuple[Action, DropMode | None, float | None] | None:
    if isinstance(node, yaml.MappingNode):
        items = f.mapping(node, "then", ("delay",))
        if "delay" not in items:
            f.err(node, "then: a mapping must be {delay: DURATION}")
            return None
        seconds = f.convert(items["delay"][1], values.positive_duration, "then.delay")
        return None if seconds is BAD else (Action.DELAY, None, seconds)
    word = f.choice(node, "then", tuple(THEN))
    return None if word is BAD else (*THEN[word], None)


def _classifier(f: PolicyFile, node: Node) -> tuple[Classifier, str] | None:
    items = f.mapping(node, "classify rule", CLASSIFY_KEYS)
    if not isinstance(node, yaml.MappingNode):
        return None
    if ("stream" in items) == ("stream_from_header" in items):
        f.err(node, "a classify rule needs exactly one of `stream:` or `stream_from_header:`")
        return None
    kw: dict[str, Any] = {}
    where = f.at(node)
    if "stream" in items:
        kw["stream"] = f.text(items["stream"][1], "stream", NAME)
        where = f.at(items["stream"][1])
    else:
        kw["stream_header"] = f.text(items["stream_from_header"][1], "stream_from_header")
    # Globs are matched case-insensitively: addresses, domains and these header values are.
    for key, field in (("sender", "senders"), ("recipient_domain", "domains")):
        if key in items:
            kw[field] = f.texts(items[key][1], key)
    if "headers" in items:
        globs = [(name, f.text(v, f"headers.{name}"))
                 for name, (_, v) in f.mapping(items["headers"][1], "headers").items()]
        kw["headers"] = BAD if any(g is BAD for _, g in globs) else tuple(globs)
    if BAD in kw.values():
        return None
    if "stream" in kw and not (kw.get("senders") or kw.get("domains") or kw.get("headers")):
        f.err(node, "this rule matches every message; name the stream in default_stream instead")
        return None
    kw["senders"] = tuple(s.lower() for s in kw.get("senders", ()))
    kw["domains"] = tuple(d.lower() for d in kw.get("domains", ()))
    kw["headers"] = tuple((n.lower(), g.lower()) for n, g in kw.get("headers", ()))
    return Classifier(**kw, where=f.at(node)), where
