"""Which hosts each stored certificate serves, and by which step of the SNI order.

Why not just the ``ssl_cert_id`` bindings: a certificate also serves hosts by domain match
(an upload covering a host's name) and as a host's automatic certificate (Let's Encrypt).
An API that shows only bindings makes such a certificate look free to delete, and deleting
it drops those hosts to the fallback. So the answer comes from the SNI selection table the
handshakes use (:meth:`aegis.tls.selection.SelectionTable.select`), asked for every name of
every host; explicit bindings count as well even while the bound certificate is not chosen
(expired, not loaded), since the store refuses to delete a bound certificate.

Read on the reactor thread (the table is in memory); never inside a store transaction, which
may run on the store's thread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from aegis.store.records import HostRecord
from aegis.tls.selection import STEP_FALLBACK, STEP_HOST_BINDING, STEPS, Selection


class SelectionTableView(Protocol):
    """The part of :class:`aegis.tls.selection.SelectionTable` asked here."""

    def select(self, server_name: str | None, now: datetime, want: bool = True) -> Selection:
        """The certificate a handshake for ``server_name`` gets at ``now``."""


class SelectionView(Protocol):
    """Whatever holds the current table (:class:`aegis.tls.selection.SelectionState`)."""

    def current(self) -> SelectionTableView:
        """The table a handshake starting now uses."""


@dataclass(frozen=True)
class HostUse:
    """``host`` gets the certificate for ``names`` by selection step ``step``."""

    host: HostRecord
    step: str
    names: tuple[str, ...]

    def public(self) -> dict[str, Any]:
        """The API shape (``id`` and ``domain`` first: what the UI reads)."""
        return {"id": self.host.id, "domain": self.host.domain, "names": list(self.names),
                "step": self.step}

    def brief(self) -> dict[str, Any]:
        """The shape in refusals and events: which host, by which step."""
        return {"id": self.host.id, "domain": self.host.domain, "step": self.step}

    def describe(self) -> str:
        return f"{self.host.domain} (host {self.host.id}) by {self.step}"


Usage = Mapping[int, Sequence[HostUse]]


def served_hosts(
    hosts: Sequence[HostRecord], selection: SelectionView | None, now: datetime
) -> dict[int, list[HostUse]]:
    """Certificate id -> the hosts it serves, each with its step and names (host order,
    then step order). Without a selection table only the bindings are known."""
    found: dict[int, dict[tuple[int, str], list[str]]] = {}
    hosts_by_id = {host.id: host for host in hosts}
    table = None if selection is None else selection.current()
    for host in hosts:
        if table is not None:
            for name in host.names:
                chosen = table.select(name, now, want=False)
                cert_id = chosen.certificate.id
                if chosen.step == STEP_FALLBACK or cert_id is None:
                    continue
                uses = found.setdefault(cert_id, {})
                uses.setdefault((host.id, chosen.step), []).append(name)
        if host.ssl_cert_id is not None:
            uses = found.setdefault(host.ssl_cert_id, {})
            uses.setdefault((host.id, STEP_HOST_BINDING), list(host.names))
    order = {step: index for index, step in enumerate(STEPS)}
    result: dict[int, list[HostUse]] = {}
    for cert_id, uses in found.items():
        keys = sorted(uses, key=lambda key: (key[0], order[key[1]]))
        result[cert_id] = [HostUse(hosts_by_id[host_id], step, tuple(uses[(host_id, step)]))
                           for host_id, step in keys]
    return result


def bindings_only(uses: Sequence[HostUse]) -> list[HostUse]:
    """The uses a forced deletion cannot override: hosts bound by ``ssl_cert_id``."""
    return [use for use in uses if use.step == STEP_HOST_BINDING]


__all__ = ["HostUse", "SelectionView", "Usage", "bindings_only", "served_hosts"]
