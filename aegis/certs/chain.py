"""Putting an uploaded bundle into serving order, and judging whether it is complete.

Decisions (documented in docs/certificates.md):

* The leaf is the certificate whose public key matches the private key, wherever it sits in
  the upload. From it, each next certificate is the one whose subject is the current issuer
  *and* whose key verifies the current signature: names alone can be forged or reused.
* Exact duplicates are dropped. A certificate that is not on the path from the leaf
  (an unrelated intermediate, a second leaf, an alternative root) is **refused**, naming its
  subject: a bundle that does not fit together is almost always the wrong file, and silently
  serving something else than what was uploaded would surprise the operator.
* ``complete`` means the path ends at a self-signed certificate, or at a certificate issued
  by one of the trust roots passed in (normally the system bundle). A bundle without its
  intermediate is still accepted: the flag tells the operator, and clients that fetch
  intermediates (AIA) still work.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from aegis.certs.errors import CHAIN_UNRELATED, CertificateError


@dataclass(frozen=True)
class OrderedChain:
    """Leaf first, each certificate followed by its issuer."""

    certificates: tuple[x509.Certificate, ...]
    complete: bool


def issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    """Whether ``parent`` issued ``child``: matching names and a verifying signature."""
    if child.issuer != parent.subject:
        return False
    try:
        child.verify_directly_issued_by(parent)
    except Exception:
        # InvalidSignature, unsupported algorithms, malformed keys: not a link either way.
        return False
    return True


def is_self_signed(certificate: x509.Certificate) -> bool:
    return issued_by(certificate, certificate)


def _der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def unique(certificates: Iterable[x509.Certificate]) -> list[x509.Certificate]:
    """The certificates without exact duplicates, first occurrence kept."""
    seen: set[bytes] = set()
    out: list[x509.Certificate] = []
    for certificate in certificates:
        der = _der(certificate)
        if der not in seen:
            seen.add(der)
            out.append(certificate)
    return out


def order_chain(
    leaf: x509.Certificate,
    others: Sequence[x509.Certificate],
    trust_roots: Sequence[x509.Certificate] = (),
    field: str = "cert_pem",
) -> OrderedChain:
    """Order ``others`` behind ``leaf`` by issuer links.

    @raise CertificateError: ``chain_unrelated`` if any certificate is not on the path.
    """
    leaf_der = _der(leaf)
    remaining = [cert for cert in unique(others) if _der(cert) != leaf_der]
    chain = [leaf]
    current = leaf
    while remaining and not is_self_signed(current):
        candidates = [cert for cert in remaining if issued_by(current, cert)]
        if not candidates:
            break
        # With a cross-signed and a self-signed form of one CA, follow the cross-sign (it is
        # there to reach an older root); otherwise the one that lasts longest.
        best = min(
            candidates,
            key=lambda cert: (is_self_signed(cert), -cert.not_valid_after_utc.timestamp()),
        )
        chain.append(best)
        remaining.remove(best)
        current = best
    if remaining:
        stray = remaining[0].subject.rfc4514_string() or "(empty subject)"
        raise CertificateError(
            CHAIN_UNRELATED,
            f"{field}: the certificate {stray!r} is not part of the chain of the certificate "
            "that matches the key; remove it (or upload the matching key)",
            field,
        )
    complete = is_self_signed(current) or any(issued_by(current, root) for root in trust_roots)
    return OrderedChain(tuple(chain), complete)
