"""Coverage-guided fuzzing (atheris) of what reads untrusted bytes: messages, headers,
tokens and policy files. Not part of the test suite; the hypothesis tests are.

    pip install -e '.[fuzz]'
    python -m bench.fuzz_parse -runs=200000            # libFuzzer flags pass through
    python -m bench.fuzz_parse -max_total_time=300

A crash is any exception other than the documented ones (MessageRejected, TokenError,
PolicyError, ValueError from the rewrite's own argument checks).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from proxy.clock import ManualClock
    from proxy.errors import PolicyError, TokenError
    from proxy.message import Message, MessageRejected, normalise
    from proxy.policy import load_policies
    from proxy.rewrite import add_unsubscribe
    from proxy.settings import UnsubscribeKey
    from proxy.tokens import TokenSigner

SIGNER = TokenSigner([UnsubscribeKey("f1", b"fuzz-secret-0123456789abcdef")],
                     ManualClock(1_800_000_000.0), 90 * 86400)
POLICY_DIR = Path(tempfile.mkdtemp(prefix="heed-fuzz-"))


def one_input(data: bytes) -> None:
    if not data:
        return
    which, rest = data[0] % 3, data[1:]
    if which == 0:  # message: normalise, parse, rewrite
        try:
            normalised = normalise(rest)
        except MessageRejected:
            return
        message = Message.parse(normalised)
        out = add_unsubscribe(message.header_block, https_url="https://h.test/u/T",
                              mailto="unsubscribe+T@h.test")
        assert Message.parse(out.headers + b"\r\n" + message.body).body == message.body
    elif which == 1:  # token
        try:
            SIGNER.verify(rest.decode("utf-8", errors="replace"))
        except TokenError:
            return
        raise AssertionError("a fuzzed token verified")
    else:  # policy file
        (POLICY_DIR / "policy.yaml").write_bytes(rest)
        try:
            load_policies(POLICY_DIR)
        except PolicyError as exc:
            assert all(":" in e for e in exc.errors)


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
