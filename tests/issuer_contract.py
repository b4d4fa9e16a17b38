"""The contract every :class:`aegis.interfaces.ICertificateIssuer` must keep, as a mixin.

A test class inherits :class:`IssuerContract` and provides the ``subject`` fixture: an
:class:`IssuerSubject` with the issuer under test, a source of fresh names it can issue for,
and how to make its next attempt fail. ``tests/test_issuer_contract.py`` runs it against the
fake issuer, ACME against a real Pebble, and Cloudflare Origin against the shipped fake API
over real HTTP; a new source's issuer adds one class there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import count, pairwise
from typing import Any

import pytest
import pytest_twisted
from cryptography import x509
from zope.interface.verify import verifyObject

from aegis.certs.lifecycle.transitions import split_issued
from aegis.crypto.keys import build_csr, generate_private_key, public_keys_equal
from aegis.interfaces import ICertificateIssuer

_serial = count(1)


@dataclass
class IssuerSubject:
    """``fail_once()`` makes the next :meth:`issue` fail; ``recover()`` undoes whatever it
    set up (called after that failure). ``names(n)`` gives ``n`` names not used before."""

    issuer: Any
    domain: str
    fail_once: Callable[[], None]
    recover: Callable[[], None] = field(default=lambda: None)
    names_per_certificate: int = 2

    def names(self, n: int | None = None) -> list[str]:
        wanted = self.names_per_certificate if n is None else n
        serial = next(_serial)
        return [f"c{serial}-{i}.{self.domain}" for i in range(wanted)]


async def issue(subject: IssuerSubject, names: list[str]) -> tuple[Any, list[x509.Certificate]]:
    """Issue for ``names`` with a fresh key of the issuer's kind: (key, parsed chain)."""
    key = generate_private_key(subject.issuer.key_kind)
    result = await subject.issuer.issue(build_csr(key, names), names)
    chain_pem, source_ref = split_issued(result)  # bytes, or the chain with its reference
    assert source_ref is None or (isinstance(source_ref, str) and source_ref)
    return key, x509.load_pem_x509_certificates(chain_pem)


class IssuerContract:
    """Tests any issuer must pass. Subclasses override :meth:`subject`."""

    @pytest.fixture
    def subject(self) -> IssuerSubject:
        raise NotImplementedError("a contract test class provides the subject fixture")

    def test_provides_the_interface(self, subject: IssuerSubject) -> None:
        assert verifyObject(ICertificateIssuer, subject.issuer)

    def test_identity_source_and_key_kind_are_non_empty_strings(
        self, subject: IssuerSubject
    ) -> None:
        issuer = subject.issuer
        for attribute in ("identity", "source", "key_kind"):
            value = getattr(issuer, attribute)
            assert isinstance(value, str) and value.strip() == value != ""
        assert issuer.key_kind in ("ecdsa-p256", "rsa-2048")

    @pytest_twisted.ensureDeferred
    async def test_issue_returns_a_chain_for_the_csr_key_and_exactly_the_names(
        self, subject: IssuerSubject
    ) -> None:
        names = subject.names()
        key, chain = await issue(subject, names)
        leaf = chain[0]
        assert public_keys_equal(leaf.public_key(), key.public_key())
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sorted(sans.get_values_for_type(x509.DNSName)) == sorted(names)
        now = datetime.now(UTC)  # every subject runs on the real clock
        assert leaf.not_valid_before_utc <= now < leaf.not_valid_after_utc
        for child, parent in pairwise(chain):
            child.verify_directly_issued_by(parent)

    @pytest_twisted.ensureDeferred
    async def test_a_second_issue_works_after_a_failure(self, subject: IssuerSubject) -> None:
        names = subject.names()
        identity = subject.issuer.identity
        subject.fail_once()
        with pytest.raises(Exception) as info:
            await issue(subject, names)
        assert str(info.value)  # descriptive
        subject.recover()
        key, chain = await issue(subject, names)
        assert public_keys_equal(chain[0].public_key(), key.public_key())
        assert subject.issuer.identity == identity  # stable across attempts and failures

    @pytest_twisted.ensureDeferred
    async def test_abandon_is_idempotent(self, subject: IssuerSubject) -> None:
        names = subject.names()
        assert await subject.issuer.abandon(names) is None  # nothing in flight
        await issue(subject, names)
        assert await subject.issuer.abandon(names) is None
        assert await subject.issuer.abandon(names) is None

    @pytest_twisted.ensureDeferred
    async def test_renewal_window_is_none_or_an_ordered_pair(
        self, subject: IssuerSubject
    ) -> None:
        _key, chain = await issue(subject, subject.names())
        leaf = chain[0]
        window = subject.issuer.renewal_window(leaf.not_valid_before_utc,
                                               leaf.not_valid_after_utc)
        if window is not None:
            start, end = window
            assert isinstance(start, datetime) and isinstance(end, datetime)
            assert start <= end
