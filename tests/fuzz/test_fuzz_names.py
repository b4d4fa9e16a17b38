"""Hostname normalisation and wildcard matching under hypothesis (ACCEPTANCE 8, 9, 12, 16)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from aegis.names import InvalidHostname, matches, normalise
from tests.fuzz.targets import names

label = st.text(alphabet="abcxyz09-ü*.", min_size=1, max_size=12)
hostish = st.lists(label, min_size=1, max_size=5).map(".".join)
decorated = st.tuples(hostish, st.sampled_from(["", ".", " ", "\n", ";touch /tmp/x", "$(id)",
                                                "\x00", ":443", "/"]),
                      st.booleans()).map(lambda t: (t[0].upper() if t[2] else t[0]) + t[1])


@given(st.binary(max_size=120))
def test_any_bytes(data: bytes) -> None:
    names(data)


@given(decorated)
def test_hostname_like_text(text: str) -> None:
    names(text.encode())


@given(hostish, hostish)
def test_matching_agrees_with_one_label_rule(pattern: str, hostname: str) -> None:
    try:
        pattern, hostname = normalise(pattern), normalise(hostname, allow_wildcard=False)
    except InvalidHostname:
        return
    if pattern.startswith("*."):
        first, _, rest = hostname.partition(".")
        assert matches(pattern, hostname) == (rest == pattern[2:] and bool(first))
    else:
        assert matches(pattern, hostname) == (pattern == hostname)


@given(st.sampled_from(["bücher.example", "BÜCHER.example.", "xn--bcher-kva.example"]))
def test_idn_forms_agree(text: str) -> None:
    assert normalise(text) == "xn--bcher-kva.example"
