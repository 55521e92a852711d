"""Real bounces nobody here wrote (sisimai/set-of-emails, maildir/bsd) over SMTP, against Sisimai.

Every file Debian's Sisimai reads as a bounce is sent to heed twice, as a
reporting MTA would: to ``bounce+TOKEN@`` (the VERP address of the person Sisimai
names) and to plain ``bounce@``. heed's audit says what it made of each; the
targets are the issue's (14): hard/soft as Sisimai's ``softbounce`` on ≥ 97 % of
files with a clear reason and ≥ 90 % overall, an event for ≥ 99 % of the VERP'd
ones, the right person for ≥ 90 % of those sent to plain bounce@.

One deliberate difference: Sisimai counts ``suspend`` (a disabled mailbox) as
soft; heed refuses it (docs/events.md), so the test expects hard there.

The corpus is read from HEED_SET_OF_EMAILS (a bare git repository of
sisimai/set-of-emails, or a checkout of it) and extracted to a temporary
directory; it is never part of this repository.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pytest
import redis as redis_sync

from proxy.clock import ManualClock
from proxy.keys import Keys
from tests import test_smtp_mailpath as mailpath
from tests.conftest import Upstream
from tests.harness import HeedThread, make_settings

CORPUS = os.environ.get("HEED_SET_OF_EMAILS", "/work/.mirror/sisimai+set-of-emails/repo")
policies = mailpath.policies
clock = mailpath.clock
# Reasons whose hard/soft nobody argues about (the list, in Sisimai's names).
CLEAR = frozenset(("userunknown", "hostunknown", "hasmoved", "notaccept", "suspend",
                   "mailboxfull", "expired", "toomanyconn", "networkerror", "systemerror",
                   "blocked", "spamdetected"))
ORACLE = r"""
use strict; use warnings; use Sisimai; use JSON::PP;
my %out;
for my $e (@{ Sisimai->make($ARGV[0]) || [] }) {
    (my $f = $e->origin) =~ s{.*/}{};
    push @{ $out{$f} }, { reason => $e->reason, soft => $e->softbounce + 0,
                          recipient => lc $e->recipient->address,
                          feedbacktype => $e->feedbacktype };
}
print JSON::PP->new->canonical->encode(\%out);
"""


def _extract(target: Path) -> Path:
    """maildir/ of the corpus (bsd: the bounces; dos, mac: CRLF and CR copies; err, not…)."""
    source = Path(CORPUS)
    if (source / "maildir" / "bsd").is_dir():
        return source / "maildir"
    if not (source / "HEAD").exists():
        pytest.skip(f"no sisimai/set-of-emails at {CORPUS}: set HEED_SET_OF_EMAILS to a bare "
                    "git repository or a checkout of it")
    tar = subprocess.run(["git", "--git-dir", str(source), "archive", "HEAD", "maildir"],
                         capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(tar)) as archive:
        archive.extractall(target, filter="data")
    return target / "maildir"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict]]:
    if shutil.which("perl") is None or subprocess.run(
            ["perl", "-MSisimai", "-e", "1"], capture_output=True).returncode != 0:
        pytest.skip("Sisimai is not installed (Debian: libsisimai-perl)")
    tmp = tmp_path_factory.mktemp("set-of-emails")
    folder = _extract(tmp) / "bsd"
    # One perl process for the whole folder: file -> reason, softbounce, recipient.
    found = json.loads(subprocess.run(["perl", "-e", ORACLE, str(folder)], capture_output=True,
                                      check=True, timeout=120).stdout)
    yield folder, found
    shutil.rmtree(tmp, ignore_errors=True)


def _hard(record: dict) -> bool:
    return record["soft"] == 0 or record["reason"] == "suspend"


def _events(client: redis_sync.Redis, after: bytes,
            outcomes: tuple[str, ...] = ("bounce",)) -> tuple[list[dict[str, str]], bytes]:
    entries = client.xrange(Keys().audit, min=b"(" + after)
    out = []
    for entry_id, fields in entries:
        after = entry_id
        row = {k.decode(): v.decode("utf-8", "replace") for k, v in fields.items()}
        if row.get("kind") == "event" and row.get("outcome") in outcomes:
            out.append(row)
    return out, after


def _send(h: HeedThread, rcpt: str, data: bytes) -> int:
    with h.smtp() as c:
        c.mail("<>")
        code, _ = c.rcpt(rcpt)
        if code != 250:
            return code
        c.putcmd("data")
        code, _ = c.getreply()
        assert code == 354
        body = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        body = body.replace(b"\r\n.", b"\r\n..")  # dot-stuffing (RFC 5321 §4.5.2)
        c.send(body + (b"" if body.endswith(b"\r\n") else b"\r\n") + b".\r\n")
        code, _ = c.getreply()
        return code


def test_heed_reads_the_corpus_as_sisimai_does(
        corpus: tuple[Path, dict], redis_url: str, upstream: Upstream, policies: Path,
        clock: ManualClock) -> None:
    folder, found = corpus
    oracle = {name: recs for name, recs in found.items()
              if any(r["soft"] in (0, 1) for r in recs)}
    assert len(oracle) > 500, "Sisimai read too few of the corpus's files as bounces"
    settings = make_settings(redis_url=redis_url, upstream_port=upstream.port,
                             policies=policies, smtp={"client_networks": ["192.0.2.0/24"]},
                             bounces={"verp_max_local": 200})
    h = HeedThread(settings, clock).start()
    client = redis_sync.Redis.from_url(redis_url)
    assert h.heed is not None
    after = b"0-0"
    agree = clear = clear_agree = evented = named = 0
    refused_at_data = []
    wrong = []
    try:
        for name, records in sorted(oracle.items()):
            records = [r for r in records if r["soft"] in (0, 1)]
            data = (folder / name).read_bytes()
            who = records[0]["recipient"]
            token = h.heed.tokens.verp(who, "marketing")
            client.set(Keys().verp(token), f"{who}\nmarketing")  # as heed writes it when sending
            if _send(h, f"bounce+{token}@heed.test", data) != 250:
                refused_at_data.append(name)
            h.settle()
            events, after = _events(client, after)
            evented += bool(events)
            hard = any("; hard" in e["detail"] for e in events if e["recipient"] == who)
            expected = _hard(records[0])
            agree += hard == expected
            if records[0]["reason"] in CLEAR:
                clear += 1
                clear_agree += hard == expected
            if hard != expected:
                wrong.append(f"{name}: sisimai {records[0]['reason']}, heed "
                             f"{'hard' if hard else 'soft'}")
            # The same report to plain bounce@: heed must find the person itself.
            _send(h, "bounce@heed.test", data)
            h.settle()
            events, after = _events(client, after)
            named += bool({e["recipient"] for e in events} & {r["recipient"] for r in records})
    finally:
        client.close()
        h.stop()
    total = len(oracle)
    figures = (f"{total} bounces: hard/soft as Sisimai {agree}/{total} "
               f"({agree / total:.1%}), clear reasons {clear_agree}/{clear} "
               f"({clear_agree / clear:.1%}); VERP event {evented}/{total} "
               f"({evented / total:.1%}); plain bounce@ person {named}/{total} "
               f"({named / total:.1%})")
    print(figures)
    assert not refused_at_data, refused_at_data
    assert clear_agree / clear >= 0.97, (figures, wrong)
    assert agree / total >= 0.90, (figures, wrong)
    assert evented / total >= 0.99, figures
    assert named / total >= 0.90, figures


def test_complaints_in_the_corpus_name_the_person_sisimai_names(
        corpus: tuple[Path, dict], redis_url: str, upstream: Upstream, policies: Path,
        clock: ManualClock) -> None:
    folder, found = corpus
    # Sisimai names "undisclosed-recipient-in-headers@….invalid" when nobody is named.
    reports = {name: recs[0] for name, recs in found.items()
               if recs[0]["reason"] == "feedback" and not recs[0]["recipient"].endswith(
                   ".invalid")}
    assert len(reports) >= 10
    settings = make_settings(redis_url=redis_url, upstream_port=upstream.port,
                             policies=policies, smtp={"client_networks": ["192.0.2.0/24"]})
    h = HeedThread(settings, clock).start()
    client = redis_sync.Redis.from_url(redis_url)
    after, named, refused, wrong = b"0-0", 0, 0, []
    try:
        for name, record in sorted(reports.items()):
            assert _send(h, "fbl@heed.test", (folder / name).read_bytes()) == 250, name
            h.settle()
            events, after = _events(client, after, ("complaint", "feedback"))
            mine = [e for e in events if e["recipient"] == record["recipient"]]
            named += bool(mine)
            if not mine:
                wrong.append(name)
            # abuse, fraud, opt-out refuse; auth-failure and virus are only recorded.
            expected = "complaint" if record["feedbacktype"] not in (
                "auth-failure", "virus") else "feedback"
            refused += any(e["outcome"] == expected for e in mine)
    finally:
        client.close()
        h.stop()
    print(f"complaints: person {named}/{len(reports)}, right outcome {refused}/{len(reports)}")
    assert named / len(reports) >= 0.85, wrong
    assert refused == named


def test_no_report_in_the_corpus_is_refused_at_data(
        corpus: tuple[Path, dict], redis_url: str, upstream: Upstream, policies: Path,
        clock: ManualClock) -> None:
    folder, _ = corpus
    files = sorted(p for p in folder.parent.rglob("*.eml") if p.is_file())
    assert len(files) > 700
    settings = make_settings(redis_url=redis_url, upstream_port=upstream.port,
                             policies=policies, smtp={"client_networks": ["192.0.2.0/24"]})
    h = HeedThread(settings, clock).start()
    refused = []
    try:
        for path in files:
            for rcpt in ("bounce@heed.test", "fbl@heed.test"):
                # As stored (bsd: LF, dos: CRLF, mac: CR), made into SMTP lines.
                data = path.read_bytes().replace(b"\r\n", b"\n").replace(b"\r", b"\n")
                code = _send(h, rcpt, data)
                if code != 250:
                    refused.append(f"{path.parent.name}/{path.name} to {rcpt}: {code}")
    finally:
        h.stop()
    assert not refused, refused
