"""Cloudflare Edge certificates: order an advanced certificate pack, and check on it later.

Why so little is kept: the pack's certificate and key live at Cloudflare's edge, never here.
Aegis keeps only an audit record (no token) in the ``settings`` table under
``cloudflare.edge_pack.<pack id>`` (JSON: zone, hosts, CA, method, validity, last status,
times), so an operator can see what was ordered. The token is not stored at all: checking a
pack's status takes the token again, because validation can take minutes to days and
keeping a Cloudflare credential around for that is not worth the risk.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from aegis.interfaces import IStore, IStoreTransaction
from aegis.sources.cloudflare.client import CloudflareClient, CloudflareError, Credentials
from aegis.sources.cloudflare.orders import EdgeOrder, parse_identifier
from aegis.sources.cloudflare.timefmt import format_rfc3339

log = Logger(namespace="aegis.sources.cloudflare")
AUDIT_PREFIX = "cloudflare.edge_pack."

#: Public fields of a pack (and of its certificates / validation records) passed back.
_PACK_FIELDS = ("id", "status", "type", "hosts", "certificate_authority", "validation_method",
                "validity_days", "cloudflare_branding", "primary_certificate")
_CERT_FIELDS = ("id", "hosts", "status", "issuer", "expires_on", "signature")
_RECORD_FIELDS = ("txt_name", "txt_value", "http_url", "http_body", "emails", "cname",
                  "cname_target", "status")


def audit_key(pack_id: str) -> str:
    """The settings name of a pack's audit record."""
    return AUDIT_PREFIX + pack_id


def _public_pack(result: object, zone_id: str) -> dict[str, Any]:
    if not isinstance(result, dict) or not isinstance(result.get("id"), str):
        raise CloudflareError("bad_response", "Cloudflare's answer has no certificate pack id")
    pack: dict[str, Any] = {k: result[k] for k in _PACK_FIELDS if k in result}
    pack["cloudflare_id"] = result["id"]
    pack["zone_id"] = zone_id
    for name in ("validation_records", "dcv_delegation_records"):
        if isinstance(result.get(name), list):
            pack[name] = [{k: r[k] for k in _RECORD_FIELDS if k in r}
                          for r in result[name] if isinstance(r, dict)]
    if isinstance(result.get("validation_errors"), list):
        pack["validation_errors"] = [str(e.get("message", ""))[:500]
                                     for e in result["validation_errors"] if isinstance(e, dict)]
    if isinstance(result.get("certificates"), list):
        pack["certificates"] = [{k: c[k] for k in _CERT_FIELDS if k in c}
                                for c in result["certificates"] if isinstance(c, dict)]
    return pack


class EdgeCertificates:
    """Orders packs and reads their status; writes audit records through ``store``."""

    def __init__(self, client: CloudflareClient, store: IStore, clock: IReactorTime) -> None:
        self._client = client
        self._store = store
        self._clock = clock

    def _now(self) -> str:
        return format_rfc3339(datetime.fromtimestamp(self._clock.seconds(), UTC))

    def order(self, order: EdgeOrder) -> Deferred[dict[str, Any]]:
        """Fires with the pack's public view (``id``, ``status``, ...); fails with
        :class:`CloudflareError` and then no audit record is written."""
        return Deferred.fromCoroutine(self._order(order))

    async def _order(self, order: EdgeOrder) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": "advanced",
            "hosts": list(order.hostnames),
            "validation_method": order.validation_method,
            "validity_days": order.validity_days,
            "certificate_authority": order.certificate_authority,
        }
        if order.cloudflare_branding is not None:
            body["cloudflare_branding"] = order.cloudflare_branding
        result = await self._client.order_certificate_pack(order.credentials, order.zone_id, body)
        pack = _public_pack(result, order.zone_id)
        now = self._now()
        audit = {
            "pack_id": pack["id"], "zone_id": order.zone_id, "hosts": list(order.hostnames),
            "certificate_authority": order.certificate_authority,
            "validation_method": order.validation_method,
            "validity_days": order.validity_days,
            "cloudflare_branding": bool(order.cloudflare_branding),
            "status": pack.get("status", ""), "ordered_at": now, "checked_at": now,
        }
        key = audit_key(parse_identifier(pack["id"], "id"))

        def write(txn: IStoreTransaction) -> None:
            txn.set_setting(key, json.dumps(audit, sort_keys=True))

        await self._store.transact(write)
        log.info("Ordered Cloudflare certificate pack {pack_id} in zone {zone_id} for {hosts}: "
                 "{status}", pack_id=pack["id"], zone_id=order.zone_id,
                 hosts=list(order.hostnames), status=pack.get("status"),
                 event="cloudflare_edge_ordered")
        return pack

    def status(
        self, credentials: Credentials, zone_id: str, pack_id: str
    ) -> Deferred[dict[str, Any]]:
        """Fires with the pack's current public view; refreshes its audit record if any."""
        return Deferred.fromCoroutine(self._status(credentials, zone_id, pack_id))

    async def _status(self, credentials: Credentials, zone_id: str, pack_id: str
                      ) -> dict[str, Any]:
        result = await self._client.get_certificate_pack(credentials, zone_id, pack_id)
        pack = _public_pack(result, zone_id)
        key, now, status = audit_key(pack_id), self._now(), pack.get("status", "")

        def refresh(txn: IStoreTransaction) -> dict[str, Any] | None:
            raw = txn.get_setting(key)
            if raw is None:
                return None
            audit: dict[str, Any] = json.loads(raw)
            audit.update(status=status, checked_at=now)
            txn.set_setting(key, json.dumps(audit, sort_keys=True))
            return audit

        audit = await self._store.transact(refresh)
        if audit is not None:
            pack["ordered_at"] = audit.get("ordered_at")
        return pack
