"""RFC 2920 towards the upstream: one write for MAIL, RCPT and DATA, each reply mapped as before."""

from __future__ import annotations

import asyncio
import getpass
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from proxy.embedded_redis import free_port, wait_port
from proxy.errors import UpstreamError
from proxy.relay import SmtpUpstream
from proxy.settings import UpstreamSettings
from tests.test_relay import Pipelining

DATA = b"From: a@news.example.com\r\nSubject: x\r\n\r\n.starts with a dot\r\nbody\r\n"
SENDER = "a@news.example.com"
RCPTS = [f"r{i}@example.org" for i in range(5)]


@dataclass
class Raw:
    """A scripted SMTP server on a bare asyncio socket: it logs every read it makes."""

    pipelining: bool = True
    rcpt: dict[str, str] = field(default_factory=dict)  # address -> reply; else 250
    data_reply: str | None = None  # forced reply to DATA (e.g. 554 with no recipient)
    mail_reply: str | None = None  # forced reply to MAIL, after which the server hangs up
    reads: list[bytes] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)
    sessions: int = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sessions += 1
        writer.write(b"220 raw ESMTP\r\n")
        pending = b""
        accepted = 0
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                self.reads.append(chunk)
                pending += chunk
                while b"\r\n" in pending:
                    line, pending = pending.split(b"\r\n", 1)
                    verb = line[:4].upper()
                    if verb == b"EHLO":
                        writer.write(b"250-raw\r\n" + (b"250-PIPELINING\r\n" if self.pipelining
                                                       else b"") + b"250 8BITMIME\r\n")
                    elif verb == b"MAIL" and self.mail_reply:
                        writer.write(self.mail_reply.encode() + b"\r\n")
                        return
                    elif verb == b"MAIL":
                        accepted = 0
                        writer.write(b"250 2.1.0 ok\r\n")
                    elif verb == b"RCPT":
                        reply = self.rcpt.get(line[9:-1].decode(), "250 2.1.5 ok")
                        accepted += reply.startswith("250")
                        writer.write(reply.encode() + b"\r\n")
                    elif verb == b"DATA":
                        if self.data_reply or not accepted:
                            # Postfix's answer after no accepted RCPT (RFC 2920 §3.1).
                            writer.write((self.data_reply or "554 5.5.1 no valid recipients")
                                         .encode() + b"\r\n")
                            continue
                        writer.write(b"354 go ahead\r\n")
                        while b"\r\n.\r\n" not in b"\r\n" + pending:
                            more = await reader.read(65536)
                            if not more:
                                return
                            self.reads.append(more)
                            pending += more
                        body, pending = (b"\r\n" + pending).split(b"\r\n.\r\n", 1)
                        # RFC 5321 §4.5.2: a leading dot of a line was doubled.
                        self.messages.append((body + b"\r\n").replace(b"\r\n..", b"\r\n.")[2:])
                        writer.write(b"250 2.0.0 queued\r\n")
                    elif verb == b"QUIT":
                        writer.write(b"221 bye\r\n")
                        return
                    else:  # RSET, NOOP
                        writer.write(b"250 ok\r\n")
        finally:
            writer.close()


@pytest.fixture
async def raw() -> AsyncIterator[tuple[Raw, SmtpUpstream]]:
    script = Raw()
    server = await asyncio.start_server(script.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    relay = SmtpUpstream(UpstreamSettings(host="127.0.0.1", port=port, timeout=5))
    yield script, relay
    await relay.close()
    server.close()
    await server.wait_closed()


def commands(read: bytes) -> list[bytes]:
    return [line.split(b":")[0].split()[0] for line in read.split(b"\r\n") if line]


async def test_mail_rcpt_and_data_go_in_one_write(raw: tuple[Raw, SmtpUpstream]) -> None:
    script, relay = raw
    assert await relay.send(SENDER, RCPTS, DATA) == {}
    # The read after EHLO holds the whole envelope and DATA: one write, one round trip.
    envelope = next(r for r in script.reads if r.startswith(b"MAIL"))
    assert commands(envelope) == [b"MAIL", *[b"RCPT"] * 5, b"DATA"]
    assert b"\r\n..starts with a dot" in b"".join(script.reads)  # dot-stuffed on the wire
    assert script.messages == [DATA]


async def test_without_pipelining_each_command_waits(raw: tuple[Raw, SmtpUpstream]) -> None:
    script, relay = raw
    script.pipelining = False
    assert await relay.send(SENDER, RCPTS, DATA) == {}
    after = script.reads[script.reads.index(next(r for r in script.reads
                                                 if r.startswith(b"MAIL"))):]
    assert [commands(r) for r in after[:7]] == [[b"MAIL"], *[[b"RCPT"]] * 5, [b"DATA"]]
    assert script.messages == [DATA]


async def test_refused_recipients_in_a_batch_are_each_their_own(
        raw: tuple[Raw, SmtpUpstream]) -> None:
    script, relay = raw
    script.rcpt = {"r1@example.org": "550 5.1.1 no such user",
                   "r3@example.org": "452 4.2.2 mailbox full"}
    assert await relay.send(SENDER, RCPTS, DATA) == {
        "r1@example.org": (550, "5.1.1 no such user"),
        "r3@example.org": (452, "4.2.2 mailbox full")}
    assert len(script.messages) == 1 and script.sessions == 1


@pytest.mark.parametrize(("replies", "code"), [(["550 5.1.1 unknown"] * 5, 550),
                                               (["450 4.2.1 busy"] * 5, 450)])
async def test_data_554_after_every_rcpt_refused_maps_to_the_rcpt_refusal(
        raw: tuple[Raw, SmtpUpstream], replies: list[str], code: int) -> None:
    """The server answers the pipelined DATA 554 (no valid recipients); what the client
    hears is still the recipients' refusal, as in lock-step, and the connection stays."""
    script, relay = raw
    script.rcpt = dict(zip(RCPTS, replies, strict=True))
    with pytest.raises(UpstreamError) as info:
        await relay.send(SENDER, RCPTS, DATA)
    assert (info.value.code, info.value.temporary) == (code, code < 500)
    assert script.messages == []
    script.rcpt = {}
    assert await relay.send(SENDER, RCPTS, DATA) == {}
    assert script.sessions == 1  # RSET kept the connection


async def test_mixed_refusals_of_every_rcpt_are_returned(raw: tuple[Raw, SmtpUpstream]) -> None:
    script, relay = raw
    script.rcpt = {"a@example.org": "550 5.1.1 unknown", "b@example.org": "451 4.3.0 later"}
    assert await relay.send(SENDER, ["a@example.org", "b@example.org"], DATA) == {
        "a@example.org": (550, "5.1.1 unknown"), "b@example.org": (451, "4.3.0 later")}
    assert script.messages == []


async def test_a_354_after_no_accepted_rcpt_sends_no_message(
        raw: tuple[Raw, SmtpUpstream]) -> None:
    """A server that wrongly takes DATA with no recipient gets an empty message ended."""
    script, relay = raw
    script.rcpt = {r: "550 5.1.1 unknown" for r in RCPTS}
    script.data_reply = "354 go ahead"
    with pytest.raises(UpstreamError) as info:
        await relay.send(SENDER, RCPTS, DATA)
    assert info.value.code == 550
    assert any(r.startswith(b".\r\n") for r in script.reads)
    assert DATA not in b"".join(script.reads)


@pytest.mark.parametrize(("reply", "temporary"), [("552 5.3.4 message too big", False),
                                                  ("451 4.3.0 try later", True)])
async def test_a_refused_mail_is_heard_even_when_the_server_then_hangs_up(
        raw: tuple[Raw, SmtpUpstream], reply: str, temporary: bool) -> None:
    """The RCPTs and DATA sent behind MAIL get no answer: the client hears MAIL's refusal,
    not "connection lost"."""
    script, relay = raw
    script.mail_reply = reply
    with pytest.raises(UpstreamError) as info:
        await relay.send(SENDER, RCPTS, DATA)
    assert (info.value.code, info.value.message, info.value.temporary) == (
        int(reply[:3]), reply[4:], temporary)


async def test_a_late_354_times_out_at_the_command_timeout() -> None:
    """The 354 is a command reply (upstream.timeout); only the final dot's reply waits
    upstream.data_timeout (RFC 5321 §4.5.3.2.5, §4.5.3.2.6)."""
    done, ended = asyncio.Event(), asyncio.Event()

    async def hang_at_data(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 slow\r\n")
        while line := await reader.readline():
            if line.startswith(b"DATA"):
                await done.wait()
                break
            writer.write(b"250-slow\r\n250 PIPELINING\r\n" if line.startswith(b"EHLO")
                         else b"250 ok\r\n")
        writer.close()
        await writer.wait_closed()
        ended.set()

    server = await asyncio.start_server(hang_at_data, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    relay = SmtpUpstream(UpstreamSettings(host="127.0.0.1", port=port, timeout=0.5,
                                          data_timeout=600))
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(UpstreamError) as info:
            await relay.send(SENDER, RCPTS, DATA)
        assert (info.value.code, info.value.temporary) == (421, True)
        assert loop.time() - started < 5
    finally:
        done.set()
        await relay.close()
        await asyncio.wait_for(ended.wait(), 5)
        server.close()
        await server.wait_closed()


async def test_postfix_smtp_sink_pipelines(tmp_path: Path) -> None:
    """Postfix's smtp-sink offers PIPELINING and reads the batch as Postfix would."""
    port = free_port()
    dump = tmp_path / "dump"
    dump.mkdir()
    sink = subprocess.Popen(["smtp-sink", "-u", getpass.getuser(), "-d", f"{dump}/%M%S.",
                             f"127.0.0.1:{port}", "10"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    relay = SmtpUpstream(UpstreamSettings(host="127.0.0.1", port=port, timeout=5))
    try:
        wait_port(port)
        for i in range(3):
            assert await relay.send(SENDER, RCPTS, DATA + b"copy %d\r\n" % i) == {}
        await relay.close()
        for _ in range(100):
            if len(list(dump.rglob("*"))) >= 3:
                break
            await asyncio.sleep(0.05)
    finally:
        sink.terminate()
        sink.wait(10)
    dumped = b"".join(p.read_bytes() for p in dump.rglob("*") if p.is_file())
    assert all(b"copy %d" % i in dumped for i in range(3))
    assert dumped.count(b"X-Rcpt-Args: <r4@example.org>") == 3


def test_after_starttls_the_replies_are_read_through_tls(tmp_path: Path) -> None:
    """aiosmtplib does STARTTLS and EHLO again; heed then reads the TLS connection's
    replies itself (its protocol swapped onto the TLS transport) and pipelines there."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj",
                    "/CN=localhost", "-days", "1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    handler = Pipelining()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, tls_context=context,
                            require_starttls=True)
    controller.start()

    async def send() -> dict[str, tuple[int, str]]:
        relay = SmtpUpstream(UpstreamSettings(host="127.0.0.1", port=port, timeout=5,
                                              starttls=True, tls_verify=False))
        try:
            handler.rcpt_reply["r2@example.org"] = "550 5.1.1 no such user"
            first = await relay.send(SENDER, RCPTS, DATA)
            assert await relay.send(SENDER, ["r0@example.org"], DATA) == {}
            return first
        finally:
            await relay.close()

    try:
        assert asyncio.run(send()) == {"r2@example.org": (550, "5.1.1 no such user")}
    finally:
        controller.stop()
    assert [m.recipients for m in handler.received] == [
        [r for r in RCPTS if r != "r2@example.org"], ["r0@example.org"]]
    assert handler.received[0].data == DATA
