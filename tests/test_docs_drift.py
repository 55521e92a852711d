"""The docs cannot drift: each `heed …` line they quote parses, each config key they name exists."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import re
import typing

import pytest

from proxy.cli import build_parser
from proxy.settings import Settings
from tests.conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
SPAN = re.compile(r"`([^`\n]+)`")
# How a command is run in a code block: a venv, an install path, or the name alone.
RUN = re.compile(r"^\s*(?:\$ )?(?:\S*/)?heed (.*)$")
SYNOPSIS = re.compile(r"[\[\]…|]|\b[A-Z][A-Z_:.]*\b")  # [--opt], a|b, ADDRESS, H:P, …
SECTIONS = {name: kind for name, kind in typing.get_type_hints(Settings).items()
            if dataclasses.is_dataclass(kind)}
FILE_TYPES = {"py", "md", "yaml", "yml", "json", "html", "csv", "eml", "txt", "service"}


def _sources() -> list[tuple[str, str]]:
    """(file:line, text) for every line of the docs, code blocks marked by a leading ```."""
    out = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        fenced = {text.count("\n", 0, m.start()) + i
                  for m in FENCE.finditer(text) for i in range(m.group().count("\n") + 1)}
        for n, line in enumerate(text.splitlines()):
            where = f"{path.relative_to(ROOT)}:{n + 1}"
            out.append((where, ("```" if n in fenced else "") + line))
    return out


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


COMMANDS = list(_subcommands(build_parser()))


def quoted_commands() -> list[tuple[str, str]]:
    found = []
    for where, line in _sources():
        if line.startswith("```"):
            body = line[3:].split(" #")[0].rstrip(" \\")
            m = RUN.match(body)
            # "heed  unix  -  n …" in a master.cf block is a Postfix service, not a command;
            # a word close to a command ("explian") is a typo, and is checked.
            if m and difflib.get_close_matches(m.group(1).split(" ")[0], COMMANDS, cutoff=0.6):
                found.append((where, m.group(1)))
            continue
        for span in SPAN.findall(line):
            if span.startswith("heed ") or span == "heed":
                found.append((where, span[5:]))
    return found


def quoted_keys() -> list[tuple[str, str]]:
    """Spans naming a setting: ``section.key`` of a known section, or anything written
    as a setting with a value (``logging.format: json``)."""
    found = []
    for where, line in _sources():
        for span in SPAN.findall(line.lstrip("`")):
            m = re.fullmatch(r"([a-z_]+)\.([a-z_]+)(: .*)?", span)
            if m and m.group(2) in FILE_TYPES:
                continue  # proxy/api.py, not a key
            if m and (m.group(1) in SECTIONS or m.group(3)):
                found.append((where, f"{m.group(1)}.{m.group(2)}"))
    return found


def _words(command: str) -> list[str]:
    command = command.replace("\\|", "|").split(" > ")[0]
    return [w for w in re.split(r"\s+", command.replace('"', "").strip()) if w]


def check_command(command: str) -> None:
    """A line must parse as written; a synopsis must name real commands, options, choices."""
    words = _words(command)
    parser, rest = build_parser(), list(words)
    while rest and (subs := _subcommands(parser)):
        names = rest.pop(0).split("|")
        unknown = [n for n in names if n not in subs]
        assert not unknown, f"no command {unknown} in: heed {command}"
        parser = subs[names[0]]
    if not rest:
        return  # the command named in prose ("run `heed check`")
    if not SYNOPSIS.search(command):
        try:
            build_parser().parse_args(words)
        except SystemExit:
            raise AssertionError(f"does not parse: heed {command}") from None
        return
    options = {o: a for a in parser._actions for o in a.option_strings}
    positionals = [a for a in parser._actions if not a.option_strings]
    given, seen, i = 0, set(), 0
    while i < len(rest):
        flag = rest[i].strip("[]").split("=")[0]
        i += 1
        if not flag.startswith("--"):
            given += 1
            continue
        assert flag in options, f"no option {flag} in: heed {command}"
        seen.add(options[flag])
        if options[flag].nargs == 0 or "=" in rest[i - 1] or i >= len(rest):
            continue
        value, i = rest[i].strip("[]"), i + 1
        for v in value.split("|") if options[flag].choices and "|" in value else ():
            assert v in options[flag].choices, f"{flag} has no choice {v!r}: heed {command}"
    assert given <= len(positionals), f"too many arguments in: heed {command}"
    missing = [a.option_strings[0] for a in parser._actions if a.required and a.option_strings
               and a not in seen]
    assert not missing, f"{missing} required but not shown in: heed {command}"


@pytest.mark.parametrize(("where", "command"), quoted_commands())
def test_quoted_command_matches_the_parser(where: str, command: str) -> None:
    check_command(command)


@pytest.mark.parametrize(("where", "key"), quoted_keys())
def test_quoted_config_key_exists(where: str, key: str) -> None:
    section, _, name = key.partition(".")
    assert section in SECTIONS, f"{where}: no config section {section!r} ({key})"
    fields = {f.name for f in dataclasses.fields(SECTIONS[section])}
    assert name in fields, f"{where}: no config key {key}"


@pytest.mark.parametrize("bad", ["policy test MESSAGE RCPT…", "consent grant ADDRESS --lists L",
                                 "report --format pdf|html", "explian ADDRESS",
                                 "consent grant alice@example.org", "serve --workers two"])
def test_the_command_check_catches_drift(bad: str) -> None:
    with pytest.raises(AssertionError):
        check_command(bad)


def test_the_docs_quote_commands_and_keys() -> None:
    assert len(quoted_commands()) > 20 and len(quoted_keys()) > 40


def test_the_compose_example_trusts_its_containers_not_the_gateway() -> None:
    """docker-compose.yml: the tool containers may relay without AUTH; the host side may not."""
    import ipaddress

    import yaml

    from proxy.settings import load_settings

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    env = {k: str(v) for k, v in compose["services"]["heed"]["environment"].items()
           if k.startswith("HEED_SMTP__")}
    trusted = load_settings(None, env=env).smtp.client_networks  # valid, and not 0.0.0.0/0
    [net] = compose["networks"]["mail"]["ipam"]["config"]
    assert [str(n) for n in trusted] == [net["ip_range"]]
    gateway = ipaddress.ip_address(net["gateway"])
    assert gateway in ipaddress.ip_network(net["subnet"])
    assert not any(gateway in n for n in trusted)
