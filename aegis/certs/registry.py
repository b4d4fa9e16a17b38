"""The certificate registry: what the TLS layer reads during a handshake.

It holds one immutable :class:`~aegis.certs.index.Snapshot` in a single attribute. Readers
(:meth:`CertificateRegistry.lookup`, :meth:`CertificateRegistry.by_id`) read that attribute
once and work on the snapshot they got, so a handshake never sees a half-updated view; they
touch memory only and never raise.

:meth:`CertificateRegistry.reload` reads every record in one store transaction, builds the
new snapshot on a worker (decrypting only keys that changed) and swaps it in on the reactor
thread. Reloads never overlap: a reload asked for while one runs is folded into one more run
afterwards, so the last caller always sees a view at least as new as its own change.

Events (``twisted.logger``, field ``event`` carries the name): ``certificate_added``,
``certificate_removed``, ``certificate_replaced``, ``certificate_unusable``,
``certificate_reload_failed``. They carry ids, names, sources and dates; never key material.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from aegis.certs.index import Problem, Snapshot, build_snapshot, diff
from aegis.certs.model import LoadedCertificate
from aegis.crypto.keywrap import KeyWrapper
from aegis.interfaces import IStore, IStoreTransaction
from aegis.store.records import CertificateRecord
from aegis.threads import Runner, immediate_runner
from aegis.timefmt import to_text

log = Logger()

Subscriber = Callable[[Snapshot], None]


def _list(txn: IStoreTransaction) -> list[CertificateRecord]:
    return txn.list_certificates()


class CertificateRegistry:
    """In-memory view of every usable stored certificate.

    @param clock: the time source for :meth:`lookup` without an explicit ``now``.
    @param runner: where snapshot builds run (a thread pool in production, immediately in
        unit tests).
    """

    def __init__(
        self,
        store: IStore,
        wrapper: KeyWrapper,
        clock: IReactorTime,
        runner: Runner = immediate_runner,
    ) -> None:
        self._store = store
        self._wrapper = wrapper
        self._clock = clock
        self._runner = runner
        self.snapshot = Snapshot()
        self._subscribers: list[Subscriber] = []
        self._running = False
        self._waiting: list[Deferred[Snapshot]] = []
        self._queued: list[Deferred[Snapshot]] = []

    # -- the handshake path: memory only, never raises ------------------------------------

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.seconds(), UTC)

    def lookup(
        self, name: str, now: datetime | None = None, sources: frozenset[str] | None = None
    ) -> LoadedCertificate | None:
        """The certificate to serve for the normalised concrete hostname ``name``: valid at
        ``now`` (default: the clock), of one of ``sources`` if given; exact before wildcard,
        then latest expiry. Satisfies ``aegis.tls.selection.CertificateLookup``."""
        snapshot = self.snapshot
        try:
            return snapshot.lookup(name, now or self.now(), sources)
        except Exception:
            return None

    @property
    def generation(self) -> object:
        """Replaced on every reload: the current snapshot (``CertificateLookup.generation``)."""
        return self.snapshot

    def by_id(self, cert_id: int) -> LoadedCertificate | None:
        """The loaded certificate with store id ``cert_id`` (a host's ``ssl_cert_id``)."""
        try:
            return self.snapshot.by_id.get(cert_id)
        except Exception:
            return None

    def problem(self, cert_id: int) -> Problem | None:
        """Why a stored certificate is not served, or None if it is (or is unknown)."""
        return self.snapshot.problems.get(cert_id)

    # -- loading ---------------------------------------------------------------------------

    def subscribe(self, callback: Subscriber) -> None:
        """Call ``callback(snapshot)`` on the reactor thread after every swap."""
        self._subscribers.append(callback)

    def load_blocking(self) -> Snapshot:
        """Build and swap on the calling thread: for start-up, before the reactor runs."""
        records = self._store.transact_blocking(_list)
        return self._swap(build_snapshot(records, self._wrapper, self.snapshot))

    def reload(self) -> Deferred[Snapshot]:
        """Re-read the store and swap in a new snapshot; fires with it.

        Fails (``StoreError``) only if the store cannot be read; the old snapshot keeps
        serving then.
        """
        waiter: Deferred[Snapshot] = Deferred()
        if self._running:
            self._queued.append(waiter)
        else:
            self._waiting = [waiter]
            self._start()
        return waiter

    def _start(self) -> None:
        self._running = True
        previous = self.snapshot
        reading = self._store.transact(_list)

        def build(records: list[CertificateRecord]) -> Deferred[Snapshot]:
            return self._runner(lambda: build_snapshot(records, self._wrapper, previous))

        built: Deferred[Snapshot] = reading.addCallback(build)
        swapped: Deferred[Snapshot] = built.addCallback(self._swap)
        swapped.addBoth(self._finished)

    def _finished(self, result: Snapshot | Failure) -> None:
        waiters, self._waiting = self._waiting, []
        if isinstance(result, Failure):
            log.error(
                "certificate_reload_failed error={error}",
                event="certificate_reload_failed",
                error=result.getErrorMessage(),
            )
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)
        self._running = False
        if self._queued:
            self._waiting, self._queued = self._queued, []
            self._start()

    def _swap(self, new: Snapshot) -> Snapshot:
        old, self.snapshot = self.snapshot, new
        self._announce(old, new)
        for callback in list(self._subscribers):
            try:
                callback(new)
            except Exception:
                log.failure("certificate registry subscriber failed")
        return new

    def _announce(self, old: Snapshot, new: Snapshot) -> None:
        changes = diff(old, new)
        for event, ids, snapshot in (
            ("certificate_added", changes.added, new),
            ("certificate_replaced", changes.replaced, new),
            ("certificate_removed", changes.removed, old),
        ):
            for cert_id in ids:
                cert = snapshot.by_id[cert_id]
                log.info(
                    event + " id={id} source={source} names={names} not_after={not_after}",
                    event=event,
                    id=cert_id,
                    source=cert.source,
                    names=",".join(cert.names),
                    not_after=to_text(cert.not_after),
                )
        for cert_id in changes.newly_unusable:
            problem = new.problems[cert_id]
            log.error(
                "certificate_unusable id={id} reason={reason}: {message}",
                event="certificate_unusable",
                id=cert_id,
                reason=problem.reason,
                message=problem.message,
            )
