"""What the monitor watches: every stored certificate (every source), the local CA and the
admin and proxy fallback certificates, as one flat list of :class:`Watched` values.

Stored certificates come from the store's records (so a certificate whose key no longer
loads is still watched) joined with the lifecycle engine's states in memory: a certificate
an engine state points at is *renewed* (its planned renewal time and failure count come
from that state); every other one is *manual*. A certificate whose only state is
``retired`` is watched but raises no alert — nothing wants it any more.

The local certificates are renewed by :class:`aegis.localca.LocalCAMaintenance` once
:data:`aegis.localca.RENEW_BEFORE` is left; the CA itself only when it expired, so it is
manual.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import NamedTuple

from cryptography import x509
from cryptography.x509.oid import NameOID

from aegis.certs.model import LoadedCertificate
from aegis.localca import RENEW_BEFORE
from aegis.store.records import CertificateRecord, IssuanceState

LOCAL_SOURCE = "local"


class Watched(NamedTuple):
    """One certificate as the monitor sees it (public facts only). A named tuple: the
    monitor rebuilds the list on every pass, and this is the cheapest immutable value.

    ``subject`` identifies it across checks: ``certificate:<id>`` for a stored certificate,
    ``local:ca``, ``local:admin``, ``local:proxy`` for the local ones. ``managed`` is the
    lifecycle key renewing it (None: manual); ``retired`` means that key was retired.
    """

    subject: str
    certificate_id: int | None
    source: str
    issuer: str
    names: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    fingerprint: str
    renews_at: datetime | None = None
    managed: str | None = None
    failures: int = 0
    retired: bool = False
    last_error: str | None = None
    next_attempt_at: datetime | None = None

    @property
    def name(self) -> str:
        """The main name (the first SAN), the ``name`` label of the metrics."""
        return self.names[0] if self.names else ""


def _state_by_certificate(states: Iterable[IssuanceState]) -> dict[int, IssuanceState]:
    """The state renewing each certificate; a live state wins over a retired one."""
    found: dict[int, IssuanceState] = {}
    for state in states:
        if state.certificate_id is None:
            continue
        current = found.get(state.certificate_id)
        if current is None or (current.status == "retired" and state.status != "retired"):
            found[state.certificate_id] = state
    return found


def stored_certificates(
    records: Sequence[CertificateRecord], states: Iterable[IssuanceState]
) -> list[Watched]:
    """Every stored certificate, joined with the engine state that renews it (if any)."""
    by_certificate = _state_by_certificate(states)
    watched = []
    for record in records:
        state = by_certificate.get(record.id)
        live = state is not None and state.status != "retired"
        watched.append(Watched(
            subject=f"certificate:{record.id}", certificate_id=record.id,
            source=record.source, issuer=record.issuer, names=tuple(record.domains),
            not_before=record.not_before, not_after=record.not_after,
            fingerprint=record.fingerprint_sha256,
            renews_at=state.renews_at if live and state is not None else None,
            managed=state.name if live and state is not None else None,
            failures=state.failures if live and state is not None else 0,
            retired=state is not None and not live,
            last_error=state.last_error if live and state is not None else None,
            next_attempt_at=state.next_attempt_at if live and state is not None else None,
        ))
    return watched


def _common_name(name: x509.Name) -> str:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else name.rfc4514_string()


def _fingerprint(certificate: x509.Certificate) -> str:
    from cryptography.hazmat.primitives import hashes

    return certificate.fingerprint(hashes.SHA256()).hex()


def local_certificates(
    ca: x509.Certificate, admin: LoadedCertificate, proxy: LoadedCertificate
) -> list[Watched]:
    """The local CA (manual) and the two leaves it signs (renewed by the maintenance)."""
    watched = [Watched(
        subject="local:ca", certificate_id=None, source=LOCAL_SOURCE,
        issuer=_common_name(ca.issuer), names=(_common_name(ca.subject),),
        not_before=ca.not_valid_before_utc, not_after=ca.not_valid_after_utc,
        fingerprint=_fingerprint(ca),
    )]
    for label, leaf in (("admin", admin), ("proxy", proxy)):
        watched.append(Watched(
            subject=f"local:{label}", certificate_id=None, source=LOCAL_SOURCE,
            issuer=_common_name(leaf.leaf.issuer), names=leaf.names,
            not_before=leaf.not_before, not_after=leaf.not_after,
            fingerprint=_fingerprint(leaf.leaf), renews_at=leaf.not_after - RENEW_BEFORE,
            managed=f"local:{label}",
        ))
    return watched


__all__ = ["LOCAL_SOURCE", "Watched", "local_certificates", "stored_certificates"]
