"""Hostname rules: ACCEPTANCE items 8, 9, 12, 16, 17 (the parts that live in aegis.names)."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aegis.names import (
    InvalidHostname,
    for_log,
    is_wildcard,
    matches,
    normalise,
    normalise_sni,
    wildcard_parent,
)

LDH = string.ascii_letters + string.digits
label = st.text(LDH, min_size=1, max_size=20).map(str.lower)
hostnames = (
    st.lists(label, min_size=2, max_size=5)
    .map(".".join)
    .filter(lambda name: not name.rsplit(".", 1)[-1].isdigit())
)


@pytest.mark.parametrize(
    ("given_name", "expected"),
    [
        ("app.example.com", "app.example.com"),
        ("APP.Example.COM.", "app.example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("BÜCHER.example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("bücher\u3002example", "xn--bcher-kva.example"),  # ideographic full stop
        ("*.Example.com", "*.example.com"),
        ("*.bücher.example", "*.xn--bcher-kva.example"),
        ("localhost", "localhost"),
        ("ex\u200b.com", "ex.com"),  # UTS 46 drops the zero-width space: one spelling
        ("a-b.c0.example", "a-b.c0.example"),
        ("x" * 63 + ".com", "x" * 63 + ".com"),
    ],
)
def test_normalise_accepts(given_name: str, expected: str) -> None:
    assert normalise(given_name) == expected


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("", "empty"),
        (".", "empty"),
        ("a..com", "empty label"),
        (".a.com", "empty label"),
        ("-a.com", "start or end"),
        ("a-.com", "start or end"),
        ("a_b.com", "'_'"),
        ("a.com;touch /tmp/x", "';'"),
        ("$(id)", "'$'"),
        ("`id`.com", "'`'"),
        ("a.com\nevil.com", "'\\n'"),
        ("a.com\r\nX: y", "not allowed"),
        ("a\x00.com", "'\\x00'"),
        ("a b.com", "' '"),
        ("a/b.com", "'/'"),
        ("*.com", "two labels"),
        ("*", "whole left-most"),
        ("*.", "two labels"),
        ("a*.ex.com", "whole left-most"),
        ("*a.ex.com", "whole left-most"),
        ("*.*.ex.com", "whole left-most"),
        ("a.*.ex.com", "whole left-most"),
        ("1.2.3.4", "IP address"),
        ("xn--zz.example", "not a valid A-label"),
        ("x" * 64 + ".com", "longer than 63"),
        (".".join(["abcdefghi"] * 26), "longer than 253"),
        ("a" * 5000, "longer than 253"),
        ("ex\u202e.com", "internationalised"),  # right-to-left override
        ("\u2603;.com", "internationalised"),
    ],
)
def test_normalise_refuses(bad: str, reason: str) -> None:
    with pytest.raises(InvalidHostname) as caught:
        normalise(bad)
    assert reason in str(caught.value)
    assert isinstance(caught.value, ValueError)
    # The message is one printable line: it never echoes control characters.
    assert str(caught.value).isprintable()


def test_not_a_string() -> None:
    with pytest.raises(InvalidHostname, match="string"):
        normalise(b"a.com")  # type: ignore[arg-type]


def test_wildcard_refused_where_concrete_name_needed() -> None:
    with pytest.raises(InvalidHostname, match="not allowed here"):
        normalise("*.example.com", allow_wildcard=False)


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("*.ex.com", "a.ex.com", True),
        ("*.ex.com", "ex.com", False),
        ("*.ex.com", "a.b.ex.com", False),
        ("*.ex.com", "aex.com", False),
        ("*.ex.com", "*.ex.com", True),
        ("a.ex.com", "a.ex.com", True),
        ("a.ex.com", "b.ex.com", False),
        ("a.ex.com", "*.ex.com", False),
    ],
)
def test_matches(pattern: str, name: str, expected: bool) -> None:
    assert matches(pattern, name) is expected


def test_matching_is_case_insensitive_through_normalise() -> None:
    assert matches(normalise("*.EX.com"), normalise("A.ex.COM."))


def test_wildcard_parent() -> None:
    assert wildcard_parent("a.ex.com") == "ex.com"
    assert wildcard_parent("*.ex.com") == "ex.com"
    assert wildcard_parent("localhost") is None
    assert is_wildcard("*.ex.com") and not is_wildcard("a.ex.com")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"APP.EXAMPLE.COM.", "app.example.com"),
        ("app.example.com", "app.example.com"),
        (None, None),
        (b"", None),
        (b"a\x00b.com", None),
        (b"a\nb.com", None),
        (b"\xff\xfe.com", None),
        (b"*.example.com", None),
        (b"b\xc3\xbccher.example", None),  # SNI is ASCII on the wire
    ],
)
def test_normalise_sni_never_raises(raw: bytes | str | None, expected: str | None) -> None:
    assert normalise_sni(raw) == expected


def test_for_log_is_printable_and_bounded() -> None:
    rendered = for_log("evil\r\n2026-01-01 fake line\x1b[31m\\" + "x" * 500)
    assert rendered.isprintable() and rendered.isascii()
    assert "\n" not in rendered and "\x1b" not in rendered
    assert rendered.endswith("...")
    assert len(rendered) < 200
    assert for_log(b"\xff") == "'\\xff'"
    # A literal backslash cannot be confused with an escape.
    assert for_log("\\x00") != for_log("\x00")


@given(hostnames)
def test_property_idempotent_and_case_insensitive(name: str) -> None:
    once = normalise(name.upper() + ".")
    assert once == name
    assert normalise(once) == once


@given(hostnames, label)
def test_property_wildcard_covers_exactly_one_label(parent: str, extra: str) -> None:
    pattern = normalise("*." + parent)
    assert matches(pattern, normalise(f"{extra}.{parent}"))
    assert not matches(pattern, parent)
    assert not matches(pattern, normalise(f"{extra}.{extra}.{parent}"))


@given(st.text(max_size=80))
def test_property_output_is_strict_or_error(text: str) -> None:
    try:
        out = normalise(text)
    except InvalidHostname as exc:
        assert str(exc).isprintable()
        return
    assert out == out.lower() and out.isascii() and len(out) <= 253
    assert set(out) <= set(string.ascii_lowercase + string.digits + "-.*")
    assert normalise(out) == out


@given(st.binary(max_size=80))
def test_property_sni_never_raises(raw: bytes) -> None:
    result = normalise_sni(raw)
    assert result is None or result == normalise(result, allow_wildcard=False)
