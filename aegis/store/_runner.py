"""How a store gets its work off the reactor thread.

A *runner* takes a zero-argument callable and returns a Deferred of its result. Production
uses :func:`thread_runner` (one dedicated thread, so the SQLite connection is never used by
two threads at once); deterministic unit tests use :func:`immediate_runner`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")


class Runner(Protocol):
    def __call__(self, work: Callable[[], T], /) -> Deferred[T]: ...


def immediate_runner(work: Callable[[], T]) -> Deferred[T]:
    """Run ``work`` now, on the calling thread. For tests and command-line tools."""
    return maybeDeferred(work)


class StoreThread(Service):
    """Owns the single worker thread of a store; a child of the service tree.

    Stopping waits for queued work to finish before the thread ends, so a transaction that
    started is committed or rolled back, never abandoned.
    """

    def __init__(self, reactor: IReactorFromThreads, name: str = "aegis-store") -> None:
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name=name)

    def runner(self) -> Runner:
        def run(work: Callable[[], Any]) -> Deferred[Any]:
            return deferToThreadPool(self._reactor, self._pool, work)

        return run

    def startService(self) -> None:
        super().startService()
        self._pool.start()

    def stopService(self) -> None:
        super().stopService()
        self._pool.stop()
