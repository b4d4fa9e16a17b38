"""A certificate as the TLS layer uses it: parsed once, immutable, ready in memory.

The registry builds these from stored records (decrypting the key once, at load time); the
TLS handshake path only ever reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes


@dataclass(frozen=True, eq=False)
class LoadedCertificate:
    """One usable certificate: leaf, its chain (leaf first), and the decrypted private key.

    ``id`` is the store id (None for certificates that are not stored, such as the local-CA
    proxy fallback). ``names`` are the normalised SAN DNS names (wildcards as ``*.x.y``).
    ``repr`` never shows the key.
    """

    id: int | None
    source: str
    names: tuple[str, ...]
    leaf: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    key: CertificateIssuerPrivateKeyTypes = field(repr=False)
    not_before: datetime
    not_after: datetime

    def valid_at(self, moment: datetime) -> bool:
        return self.not_before <= moment < self.not_after
