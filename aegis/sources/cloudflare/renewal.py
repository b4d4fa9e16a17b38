"""Optional automatic renewal of Origin CA certificates: sealed credentials and the demand.

Why optional, and off by default: the spec says Custom and Cloudflare certificates are
renewed by hand, and renewing means keeping a Cloudflare credential. A request with
``"auto_renew": true`` (or ``PATCH /api/v1/certificates/{id}`` later) asks for it; then

* the credential (auth method and secret) is kept **sealed by the master key** in the
  certificate's ``extra`` under :data:`aegis.crypto.sealed.SEALED_CREDENTIALS`, bound to the
  certificate's uid (AES-256-GCM associated data), so it opens for that row only, is
  re-sealed by ``aegis rotate-key``, goes with the row when it is deleted, and is never in
  clear in the database, a response or a log;
* :func:`renewal_demand` (this source's ``SourceSpec.demand``) hands every such certificate
  to the lifecycle engine under the key ``certificate:<uid>``, which renews it in place at
  the lifetime rule: same id, so hosts bound to it follow.

``PATCH`` with ``"auto_renew": false`` deletes the sealed credential: from then on nothing
can renew the certificate, and the engine retires its state.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from aegis.certs import sources
from aegis.certs.lifecycle.demand import Demand, DemandInputs
from aegis.crypto.keywrap import KeyWrapper
from aegis.crypto.sealed import SEALED_CREDENTIALS
from aegis.interfaces import IStoreTransaction
from aegis.sources.cloudflare.errors import Credentials
from aegis.sources.cloudflare.orders import ORIGIN_REQUEST_TYPES, ORIGIN_VALIDITIES
from aegis.sources.cloudflare.origin import SOURCE
from aegis.store.records import CertificateRecord

REQUESTED_VALIDITY = "requested_validity"  # the certificate's ``extra`` key: days asked for
DEFAULT_VALIDITY = 5475
REQUEST_TYPE_FOR_KEY = {kind: name for name, kind in ORIGIN_REQUEST_TYPES.items()}


class RenewalOff(Exception):
    """The certificate has no usable stored credential, so it cannot be renewed."""


class NotRenewable(Exception):
    """Automatic renewal cannot be switched for this certificate (another source)."""

    admin_status = 409


def demand_key(record: CertificateRecord) -> str:
    """The lifecycle key of a stored certificate renewed in place."""
    return f"certificate:{record.uid}"


def unseal(wrapper: KeyWrapper, record: CertificateRecord) -> Credentials:
    """The credential stored with ``record``. @raise RenewalOff: none, or it does not open
    (the message names the certificate, never the credential)."""
    value = record.extra.get(SEALED_CREDENTIALS)
    if not isinstance(value, str):
        raise RenewalOff(f"automatic renewal of certificate {record.id} is off "
                         "(no Cloudflare credential is stored for it)")
    try:
        return Credentials.unseal(wrapper, record.uid, value)
    except ValueError:
        raise RenewalOff(f"the stored Cloudflare credential of certificate {record.id} does "
                         "not open with this master key") from None


def renews_automatically(record: CertificateRecord) -> bool:
    return record.source == SOURCE and isinstance(record.extra.get(SEALED_CREDENTIALS), str)


def renewal_options(record: CertificateRecord) -> dict[str, Any]:
    """What the issuer needs to renew ``record`` as it was requested (public facts)."""
    key_kind = record.key_type if record.key_type in REQUEST_TYPE_FOR_KEY else "rsa-2048"
    validity = record.extra.get(REQUESTED_VALIDITY)
    if validity not in ORIGIN_VALIDITIES:
        validity = DEFAULT_VALIDITY
    return {
        "certificate_id": record.id,
        "key_kind": key_kind,
        "request_type": REQUEST_TYPE_FOR_KEY[key_kind],
        "requested_validity": validity,
    }


def renewal_demand(inputs: DemandInputs) -> Iterator[Demand]:
    """Every Origin CA certificate with a stored credential, to be renewed in place."""
    for record in inputs.certificates:
        if renews_automatically(record):
            yield Demand(key=demand_key(record), names=record.domains, source=SOURCE,
                         certificate_id=record.id, options=renewal_options(record))


def set_renewal(
    txn: IStoreTransaction, wrapper: KeyWrapper, cert_id: int,
    credentials: Credentials | None,
) -> CertificateRecord:
    """Switch automatic renewal of certificate ``cert_id`` on (``credentials`` sealed with
    it) or off (``None``: the sealed credential deleted). ``NotFound`` for an unknown id;
    :class:`NotRenewable` for a certificate of another source."""
    record = txn.get_certificate(cert_id)
    if record.source != SOURCE:
        spec = sources.get(record.source)
        raise NotRenewable(
            f"certificate {record.id} comes from {spec.label} ({record.source}) and is "
            f"{spec.renewal_note or 'renewed by its source'}; only Cloudflare Origin CA "
            "certificates switch automatic renewal on or off")
    extra = {k: v for k, v in record.extra.items() if k != SEALED_CREDENTIALS}
    if credentials is not None:
        extra[SEALED_CREDENTIALS] = credentials.seal(wrapper, record.uid)
    fields = replace(record.fields(), auto_renew=credentials is not None, extra=extra)
    return txn.replace_certificate(record.id, fields)


__all__ = [
    "DEFAULT_VALIDITY",
    "REQUESTED_VALIDITY",
    "NotRenewable",
    "RenewalOff",
    "demand_key",
    "renewal_demand",
    "renewal_options",
    "renews_automatically",
    "set_renewal",
    "unseal",
]
