"""The fast MAIL/RCPT path parser gives aiosmtpd's own answer wherever it answers."""

from __future__ import annotations

from types import SimpleNamespace

from aiosmtpd.smtp import SMTP
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.smtp.address import plain_path


def aiosmtpd_getaddr(arg: str, limit: int = 0) -> tuple[str | None, str | None]:
    return SMTP._getaddr(SimpleNamespace(local_part_limit=limit), arg)  # type: ignore[arg-type]


PIECES = ["<", ">", "@", ".", "a", "B", "9", "-", "+", "_", " ", "\t", '"', "(", ")", ",",
          ";", ":", "[", "]", "\\", "é", "SIZE=10", " BODY=8BITMIME", "x.y"]


def text(size: int) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(PIECES), max_size=size).map("".join)


# Free text, and text shaped like a path (<local@domain>tail), where the pattern bites.
ARGS = st.one_of(text(14), st.tuples(text(4), text(4), text(4), text(4)).map(
    lambda p: f"{p[0]}<{p[1]}@{p[2]}>{p[3]}"))


@settings(max_examples=3000, deadline=None)
@given(ARGS, st.sampled_from([0, 3, 64]))
def test_plain_path_agrees_with_aiosmtpd(arg: str, limit: int) -> None:
    fast = plain_path(arg, limit)
    if fast is not None:
        assert fast == aiosmtpd_getaddr(arg, limit)


def test_the_common_forms_take_the_fast_path() -> None:
    for arg, want in [
        ("<alice@example.org>", ("alice@example.org", "")),
        ("<a.b+tag@mail.example.co.uk> SIZE=4096", ("a.b+tag@mail.example.co.uk", "SIZE=4096")),
        ("<12user@example.org>", ("12user@example.org", "")),
        ("<x@example.org>  ", ("x@example.org", "")),
    ]:
        assert plain_path(arg) == want == aiosmtpd_getaddr(arg)


def test_other_forms_are_left_to_aiosmtpd() -> None:
    for arg in ['<"quoted local"@example.org>', "<>", "alice@example.org", "<a..b@example.org>",
                "<@relay.example:alice@example.org>", "<alice@[192.0.2.1]>", "<jürgen@example.de>",
                "<alice@example.org", "<alice@example.org> (comment) SIZE=1"]:
        assert plain_path(arg) is None
    assert plain_path("<toolongname@example.org>", 4) == (None, None)
