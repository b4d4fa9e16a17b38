"""Trust roots for judging whether an uploaded chain is complete (``chain_complete``).

Only used for that flag: Aegis never decides whether to *serve* a certificate from it. Read
once at start-up (blocking, before the reactor runs) from the system bundle. A missing or
unreadable bundle gives no roots: chains then count as complete only when they end at a
self-signed certificate.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509

SYSTEM_BUNDLES = (
    Path("/etc/ssl/certs/ca-certificates.crt"),  # Debian, Ubuntu, Alpine
    Path("/etc/pki/tls/certs/ca-bundle.crt"),  # RHEL, Fedora
    Path("/etc/ssl/cert.pem"),  # macOS, BSD
)


def load_trust_roots(paths: Sequence[Path] = SYSTEM_BUNDLES) -> tuple[x509.Certificate, ...]:
    """The certificates of the first readable bundle among ``paths`` (none if none is)."""
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        try:
            with warnings.catch_warnings():
                # Some long-lived roots have non-positive serials; cryptography warns.
                warnings.simplefilter("ignore")
                return tuple(x509.load_pem_x509_certificates(data))
        except ValueError:
            continue
    return ()
