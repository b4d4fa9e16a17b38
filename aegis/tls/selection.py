"""SNI certificate selection: which certificate a TLS handshake gets, from memory only.

The spec's "SNI Certificate Selection" order, for a normalised server name:

1. **Host binding** — the host answering for the name has ``ssl_cert_id``: that certificate.
2. **Domain match** — a stored certificate of a source registered for this step (uploads,
   Cloudflare Origin; :mod:`aegis.certs.sources`) covering the name (exact, then
   wildcard). This applies to *any* SNI, host or not.
3. **Autocert** — for a host whose ``ssl_mode`` belongs to an automatic source (Let's
   Encrypt): that source's certificate for the name; if there is none,
   :meth:`IOnDemandIssuance.certificate_wanted` is called (it returns at once) and
   selection goes on.
4. **Fallback** — the local-CA proxy certificate covering all configured domains.

No SNI, an unknown or invalid SNI, and every miss end at the fallback: a customer's
certificate is never served to a client that did not name it. A certificate that is not valid
at the handshake's moment is never chosen (the registry's ``lookup`` gets ``now``; a bound
certificate is checked here).

Why a table: hosts change through the admin API (a database transaction), certificates
through uploads and renewals. The handshake must never wait for either, so
:class:`SelectionState` rebuilds an immutable :class:`SelectionTable` on the reactor thread
whenever something changes and swaps a single reference; a handshake reads whichever table
was current when it started. The certificate lookup given here must also answer from memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Protocol

from twisted.logger import Logger

from aegis.certs import sources
from aegis.certs.model import LoadedCertificate
from aegis.interfaces import IOnDemandIssuance
from aegis.names import wildcard_parent
from aegis.store.records import HostRecord

log = Logger()

STEP_HOST_BINDING = "host_binding"
STEP_DOMAIN_MATCH = sources.DOMAIN_MATCH
STEP_AUTOCERT = sources.AUTOCERT
STEP_FALLBACK = "fallback"
STEPS = (STEP_HOST_BINDING, STEP_DOMAIN_MATCH, STEP_AUTOCERT, STEP_FALLBACK)


class CertificateLookup(Protocol):
    """The in-memory certificate registry, as selection sees it.

    Both methods answer from memory, never block and never raise for a miss.
    """

    def by_id(self, cert_id: int) -> LoadedCertificate | None:
        """The certificate stored under ``cert_id`` (whatever its validity), or None."""

    def lookup(
        self, name: str, now: datetime, sources: frozenset[str]
    ) -> LoadedCertificate | None:
        """A certificate of one of ``sources`` covering the normalised ``name`` and valid at
        ``now``: an exact SAN match first, then a wildcard one; None if there is none."""

    # Optional: ``generation``, an object that is replaced whenever ``lookup`` may answer
    # differently (the registry's snapshot). The SNI layer reuses a selection for the rest
    # of the second while the table and this generation stay the same; a lookup without
    # it is asked on every handshake.


@dataclass(frozen=True)
class Selection:
    """The outcome for one handshake.

    ``host`` is the host answering for ``server_name`` (None for no SNI or an unknown
    name); ``min_version`` is the TLS version that host requires (``"1.2"`` otherwise).
    """

    certificate: LoadedCertificate
    step: str
    server_name: str | None
    host: HostRecord | None
    min_version: str


@dataclass(frozen=True)
class _HostEntry:
    host: HostRecord
    bound: LoadedCertificate | None


class SelectionTable:
    """An immutable snapshot of hosts and the fallback; :meth:`select` is the handshake path.

    Hosts are indexed by every name (domain and aliases, already normalised by the store);
    a wildcard host name ``*.example.com`` answers for ``a.example.com`` when no host has
    that exact name. Bound certificates are resolved when the table is built.
    """

    def __init__(
        self,
        hosts: Iterable[HostRecord],
        certificates: CertificateLookup,
        fallback: LoadedCertificate,
        on_demand: IOnDemandIssuance | None = None,
    ) -> None:
        index: dict[str, _HostEntry] = {}
        for host in hosts:
            bound = None
            if host.ssl_mode != sources.MODE_NONE and host.ssl_cert_id is not None:
                bound = certificates.by_id(host.ssl_cert_id)
                if bound is None:
                    log.warn(
                        "host {host_id} is bound to certificate {cert_id}, which is not "
                        "loaded; selection falls through",
                        host_id=host.id, cert_id=host.ssl_cert_id,
                    )
            entry = _HostEntry(host, bound)
            for name in host.names:
                index.setdefault(name, entry)
        self._hosts: Mapping[str, _HostEntry] = MappingProxyType(index)
        self._certificates = certificates
        self._fallback = fallback
        self._on_demand = on_demand
        self._stored = sources.by_step(STEP_DOMAIN_MATCH)
        self._automatic = {
            spec.host_mode: frozenset({spec.name}) for spec in sources.all_sources()
            if spec.host_mode is not None and spec.selection_step == STEP_AUTOCERT
        }

    @property
    def fallback(self) -> LoadedCertificate:
        return self._fallback

    def generation(self) -> object:
        """Changes whenever :meth:`select` may answer differently for the same name and
        second (the certificate lookup's ``generation``); a new object on every call if
        the lookup has none, so nothing is reused."""
        generation = getattr(self._certificates, "generation", None)
        return object() if generation is None else generation

    def host_for(self, name: str | None) -> HostRecord | None:
        """The host answering for the normalised ``name`` (exact, then wildcard), or None.

        The HTTP layer uses it with the ``Host`` header for its 421 rule.
        """
        entry = self._entry(name)
        return entry.host if entry is not None else None

    def _entry(self, name: str | None) -> _HostEntry | None:
        if name is None:
            return None
        entry = self._hosts.get(name)
        if entry is None:
            parent = wildcard_parent(name)
            if parent is not None:
                entry = self._hosts.get("*." + parent)
        return entry

    def select(self, server_name: str | None, now: datetime, want: bool = True) -> Selection:
        """The certificate for the normalised ``server_name`` (None: the client sent none).

        Never raises for any name; never does I/O. ``want`` False only looks: a missing
        automatic certificate is not asked for (the admin API showing what is served).
        """
        if server_name is None:
            return Selection(self._fallback, STEP_FALLBACK, None, None, "1.2")
        entry = self._entry(server_name)
        host = entry.host if entry is not None else None
        min_version = host.tls_min_version if host is not None else "1.2"

        def chosen(certificate: LoadedCertificate, step: str) -> Selection:
            return Selection(certificate, step, server_name, host, min_version)

        if entry is not None and entry.bound is not None and entry.bound.valid_at(now):
            return chosen(entry.bound, STEP_HOST_BINDING)
        stored = self._lookup(server_name, now, self._stored)
        if stored is not None:
            return chosen(stored, STEP_DOMAIN_MATCH)
        automatic_sources = None if host is None else self._automatic.get(host.ssl_mode)
        if automatic_sources is not None:
            automatic = self._lookup(server_name, now, automatic_sources)
            if automatic is not None:
                return chosen(automatic, STEP_AUTOCERT)
            # Only a name the host lists literally: a wildcard host must not let any client
            # start certificate orders for names of its choosing.
            if want and self._on_demand is not None and server_name in self._hosts:
                self._want(server_name)
        return chosen(self._fallback, STEP_FALLBACK)

    def _lookup(
        self, name: str, now: datetime, sources: frozenset[str]
    ) -> LoadedCertificate | None:
        """The lookup's answer, re-checked: a registry bug must not serve a wrong source or
        an expired certificate, and must not break the handshake."""
        try:
            found = self._certificates.lookup(name, now, sources)
        except Exception:
            log.failure("certificate lookup failed for {name}", name=name)
            return None
        if found is None or found.source not in sources or not found.valid_at(now):
            return None
        return found

    def _want(self, name: str) -> None:
        assert self._on_demand is not None
        try:
            self._on_demand.certificate_wanted(name)
        except Exception:
            log.failure("on-demand issuance failed to note {name}", name=name)


class SelectionSource(Protocol):
    """Whatever hands the handshake the current table (a :class:`SelectionState`)."""

    def current(self) -> SelectionTable:
        """The table to use for a handshake starting now."""


class SelectionState:
    """Holds the current :class:`SelectionTable` and rebuilds it when its inputs change.

    Call its methods on the reactor thread: each rebuild is in memory and swaps one
    reference, so handshakes in flight keep the table they started with and the next one
    sees the change. Open connections are never touched.
    """

    def __init__(
        self,
        certificates: CertificateLookup,
        fallback: LoadedCertificate,
        on_demand: IOnDemandIssuance | None = None,
        hosts: Iterable[HostRecord] = (),
    ) -> None:
        self._certificates = certificates
        self._fallback = fallback
        self._on_demand = on_demand
        self._host_list = tuple(hosts)
        self._table = self._build()

    def _build(self) -> SelectionTable:
        return SelectionTable(self._host_list, self._certificates, self._fallback,
                              self._on_demand)

    def current(self) -> SelectionTable:
        return self._table

    def set_hosts(
        self, hosts: Iterable[HostRecord], fallback: LoadedCertificate | None = None
    ) -> None:
        """Replace the host set (after any host create/update/delete), and the fallback
        with it when given, in one rebuild. Bound certificates are re-resolved too."""
        self._host_list = tuple(hosts)
        if fallback is not None:
            self._fallback = fallback
        self._table = self._build()

    def set_fallback(self, fallback: LoadedCertificate) -> None:
        """Install a re-issued proxy fallback certificate."""
        self._fallback = fallback
        self._table = self._build()

    def certificates_changed(self) -> None:
        """Re-resolve host bindings after certificates were added, replaced or removed."""
        self._table = self._build()


class MemoryCertificates:
    """A :class:`CertificateLookup` over a fixed list, for tests and small tools.

    The certificate registry in :mod:`aegis.certs` is the production implementation; this
    one follows the same contract (exact before wildcard, only valid certificates, only the
    sources asked for) in the plainest way.
    """

    def __init__(self, certificates: Iterable[LoadedCertificate] = ()) -> None:
        self._certificates = tuple(certificates)

    @property
    def generation(self) -> object:
        """Never changes: the list is fixed (see :class:`CertificateLookup`)."""
        return self

    def by_id(self, cert_id: int) -> LoadedCertificate | None:
        for certificate in self._certificates:
            if certificate.id == cert_id:
                return certificate
        return None

    def lookup(
        self, name: str, now: datetime, sources: frozenset[str]
    ) -> LoadedCertificate | None:
        usable = [c for c in self._certificates if c.source in sources and c.valid_at(now)]
        for certificate in usable:
            if name in certificate.names:
                return certificate
        parent = wildcard_parent(name)
        if parent is None:
            return None
        for certificate in usable:
            if "*." + parent in certificate.names:
                return certificate
        return None
