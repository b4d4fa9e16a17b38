"""Publishing changes: from the database into the memory views the listeners read.

After any change that affects which certificate or upstream a request gets — a host
created, changed or deleted, a certificate uploaded, replaced, deleted or issued — someone
calls :meth:`ProxyState.reload`. It reads hosts from the store, reloads the certificate
registry, re-issues the local-CA proxy fallback when the set of host names changed (the
spec: "covering all configured domains"), and then swaps, in one reactor turn, the SNI
selection table and the router's host table. This is what the spec calls "proxy reloaded":
no restart, no dropped connection; the next handshake and the next request see the change.

Reloads are serialised: a reload asked for while one runs waits for it, so two API writes in
quick succession are published in order and the last state wins.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from twisted.internet.defer import Deferred, DeferredLock, inlineCallbacks
from twisted.logger import Logger

from aegis.certs.model import LoadedCertificate
from aegis.hosts.router import HostRouter
from aegis.interfaces import IStore, IStoreTransaction
from aegis.store.records import HostRecord
from aegis.tls.selection import SelectionState

log = Logger()


class Reloadable(Protocol):
    def reload(self) -> Deferred[Any]: ...


class FallbackIssuer(Protocol):
    def reissue(self, host_names: Sequence[str]) -> Deferred[LoadedCertificate]: ...


def _hosts(txn: IStoreTransaction) -> list[HostRecord]:
    return txn.list_hosts()


def host_names(hosts: Sequence[HostRecord]) -> tuple[str, ...]:
    return tuple(sorted({name for host in hosts for name in host.names}))


class ProxyState:
    """Owns the order of a reload; holds no state of its own beyond the current name set."""

    def __init__(
        self,
        store: IStore,
        registry: Reloadable,
        selection: SelectionState,
        router: HostRouter,
        fallback: FallbackIssuer,
        initial_names: Sequence[str],
        hosts_changed: Callable[[Sequence[HostRecord]], None] | None = None,
    ) -> None:
        self._store = store
        self._registry = registry
        self._selection = selection
        self._router = router
        self._fallback = fallback
        self._names = tuple(initial_names)
        self._hosts_changed = hosts_changed
        self._lock = DeferredLock()
        self.hosts: tuple[HostRecord, ...] = ()

    def publish_hosts(
        self, hosts: Sequence[HostRecord], fallback: LoadedCertificate | None = None
    ) -> None:
        """Install ``hosts`` (and a re-issued ``fallback``) in memory now: one rebuild of the
        selection table, which also re-resolves certificate bindings."""
        self.hosts = tuple(hosts)
        self._router.update(hosts)
        self._selection.set_hosts(hosts, fallback)
        if self._hosts_changed is not None:
            self._hosts_changed(hosts)

    def reload(self) -> Deferred[None]:
        """Publish the stored state; fires when the next handshake will see it."""
        return self._lock.run(self._reload)

    @inlineCallbacks
    def _reload(self) -> Any:
        hosts = yield self._store.transact(_hosts)
        yield self._registry.reload()
        names = host_names(hosts)
        fallback = None
        if names != self._names:
            fallback = yield self._fallback.reissue(names)
            self._names = names
            log.info("proxy fallback certificate re-issued for {count} name(s)",
                     count=len(names))
        self.publish_hosts(hosts, fallback)
        log.info("proxy_reloaded hosts={hosts}", hosts=len(hosts), event="proxy_reloaded")
