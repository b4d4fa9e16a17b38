"""Hostname rules, in one place, for every part of Aegis.

Every hostname that enters Aegis (an API body, a certificate SAN, a TLS SNI value, an HTTP
``Host`` header) goes through :func:`normalise` before it is compared or stored, so two
spellings of one name can never select different certificates or hosts:

* lowercase, one trailing dot removed (``APP.Example.COM.`` is ``app.example.com``);
* internationalised names become A-labels through UTS #46 / IDNA 2008
  (``bücher.example`` is ``xn--bcher-kva.example``);
* a strict grammar afterwards: letters, digits and hyphens only (LDH), labels of 1 to 63
  characters that neither start nor end with a hyphen, at most 253 characters in all. Anything
  else (``;``, ``$(...)``, spaces, newlines, NUL, ``_``) is refused, so no hostname can ever
  carry shell or configuration syntax into a log line, a file name or a generated config;
* a final label made only of digits is refused: that is an IPv4 address, not a hostname;
* a wildcard is only a whole left-most ``*`` label followed by at least two labels:
  ``*.example.com`` is accepted, ``*.com``, ``a*.example.com``, ``*.*.example.com`` are not.

Matching (:func:`matches`) follows RFC 6125: ``*.example.com`` covers exactly one extra label
(``a.example.com``), never ``example.com`` and never ``a.b.example.com``.

The handshake path uses :func:`normalise_sni`, which never raises, and :func:`for_log`,
which turns any untrusted value into one printable, bounded line.
"""

from __future__ import annotations

import re

import idna

__all__ = [
    "InvalidHostname",
    "for_log",
    "is_wildcard",
    "matches",
    "normalise",
    "normalise_sni",
    "wildcard_parent",
]

MAX_LENGTH = 253
MAX_LABEL = 63
# Longest input worth looking at: UTS #46 mapping can shrink text, but never by this much.
_MAX_INPUT = 1024
_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
_LOG_LIMIT = 120


class InvalidHostname(ValueError):
    """A hostname breaks the grammar. ``str()`` says what is wrong and shows the (sanitised)
    name, so the admin API can return it as is."""


def _refuse(value: str, why: str) -> InvalidHostname:
    return InvalidHostname(f"invalid hostname {for_log(value)}: {why}")


def normalise(hostname: str, *, allow_wildcard: bool = True) -> str:
    """Return the one canonical spelling of ``hostname``.

    ``allow_wildcard=False`` is for names that must be concrete (SNI, ``Host``, host names).

    @raise InvalidHostname: if the name breaks any rule in the module docstring.
    """
    if not isinstance(hostname, str):
        raise InvalidHostname("a hostname must be a string")
    if not hostname:
        raise InvalidHostname("a hostname must not be empty")
    if len(hostname) > _MAX_INPUT:
        raise _refuse(hostname, f"longer than {MAX_LENGTH} characters")
    text = hostname
    wildcard = text.startswith("*.")
    if wildcard:
        if not allow_wildcard:
            raise _refuse(hostname, "a wildcard is not allowed here")
        text = text[2:]
    if not text.isascii():
        try:
            # Maps case, full-width dots (U+3002 ...) and compatibility forms; refuses
            # disallowed code points, which include every ASCII punctuation but '-' and '.'.
            text = idna.uts46_remap(text, std3_rules=True, transitional=False)
        except idna.IDNAError as exc:
            raise _refuse(hostname, _idna_reason(exc)) from None
    text = text.lower()
    if text.endswith("."):
        text = text[:-1]
    if not text:
        raise _refuse(
            hostname,
            "a wildcard needs at least two labels after '*.'"
            if wildcard
            else "a hostname must not be empty",
        )
    labels = text.split(".")
    if wildcard and len(labels) < 2:
        raise _refuse(hostname, "a wildcard needs at least two labels after '*.'")
    out = [_label(hostname, label) for label in labels]
    if out[-1].isdigit():
        raise _refuse(hostname, "an IP address is not a hostname")
    result = ".".join(["*", *out] if wildcard else out)
    if len(result) > MAX_LENGTH:
        raise _refuse(hostname, f"longer than {MAX_LENGTH} characters")
    return result


def _label(original: str, label: str) -> str:
    """One label as an LDH A-label, or InvalidHostname."""
    if not label:
        raise _refuse(original, "empty label (two dots in a row, or a leading dot)")
    if "*" in label:
        raise _refuse(original, "'*' is only allowed as the whole left-most label")
    if not label.isascii():
        try:
            label = idna.alabel(label).decode("ascii")
        except (idna.IDNAError, UnicodeError) as exc:
            raise _refuse(original, _idna_reason(exc)) from None
    elif label.startswith("xn--"):
        # An A-label given directly must be valid Punycode of a valid U-label.
        try:
            idna.ulabel(label)
        except (idna.IDNAError, UnicodeError):
            raise _refuse(original, f"label {for_log(label)} is not a valid A-label") from None
    if len(label) > MAX_LABEL:
        raise _refuse(original, f"a label is longer than {MAX_LABEL} characters")
    if not _LDH_LABEL.match(label):
        bad = next((c for c in label if not (c.isalnum() or c == "-")), None)
        if bad is not None:
            raise _refuse(original, f"character {for_log(bad)} is not allowed")
        raise _refuse(original, "a label must not start or end with '-'")
    return label


def _idna_reason(exc: Exception) -> str:
    # idna's messages quote the input: keep only our sanitised form of it.
    return f"not a valid internationalised name ({for_log(str(exc))})"


def is_wildcard(name: str) -> bool:
    """Whether a normalised name is a wildcard pattern."""
    return name.startswith("*.")


def wildcard_parent(name: str) -> str | None:
    """The domain a wildcard covering the normalised ``name`` would be written under.

    ``a.example.com`` → ``example.com`` (so ``*.example.com`` applies); ``*.example.com`` →
    ``example.com``; a single-label name → None. Used as the wildcard index key.
    """
    head, dot, rest = name.partition(".")
    if not dot or not head:
        return None
    return rest


def matches(pattern: str, hostname: str) -> bool:
    """Whether the normalised certificate name ``pattern`` covers the normalised ``hostname``.

    Case-insensitive by construction (both sides are normalised). A wildcard pattern covers
    exactly one extra left-most label; a wildcard ``hostname`` is covered only by the same
    wildcard pattern.
    """
    if pattern == hostname:
        return True
    if not is_wildcard(pattern) or is_wildcard(hostname):
        return False
    return wildcard_parent(hostname) == pattern[2:]


def normalise_sni(raw: bytes | str | None) -> str | None:
    """The normalised concrete name of a TLS SNI value, or None if absent or invalid.

    Never raises: it runs inside the TLS handshake. SNI is ASCII on the wire (RFC 6066);
    non-ASCII bytes are refused rather than guessed at.
    """
    if raw is None:
        return None
    try:
        text = raw.decode("ascii") if isinstance(raw, bytes) else raw
        return normalise(text, allow_wildcard=False)
    except Exception:
        return None


def for_log(value: object, limit: int = _LOG_LIMIT) -> str:
    """A quoted, printable, bounded rendering of any untrusted value for logs and messages.

    Control characters, backslashes and non-ASCII are escaped (``\\n``, ``\\x00``,
    ``\\xfc``), so a crafted value can neither forge a log line nor hide in a terminal.
    Longer values are cut at ``limit`` characters and marked with a trailing ``...``.
    """
    if isinstance(value, bytes):
        text = value.decode("latin-1")
    elif isinstance(value, str):
        text = value
    else:
        text = str(value)
    cut = len(text) > limit
    # ascii() escapes backslashes, quotes, control characters and all non-ASCII.
    return ascii(text[:limit]) + ("..." if cut else "")
