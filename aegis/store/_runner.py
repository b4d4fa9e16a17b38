"""How a store gets its work off the reactor thread: its own single worker thread.

The runner shape itself (and :func:`immediate_runner` for tests) lives in
:mod:`aegis.threads`; they are re-exported here for the store's callers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from aegis.threads import Runner, immediate_runner

__all__ = ["Runner", "StoreThread", "immediate_runner"]


class _DaemonThread(threading.Thread):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.daemon = True


class StoreThread(Service):
    """Owns the single worker thread of a store; a child of the service tree.

    Stopping waits for queued work to finish before the thread ends, so a transaction that
    started is committed or rolled back, never abandoned.
    """

    def __init__(self, reactor: IReactorFromThreads, name: str = "aegis-store") -> None:
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name=name)
        # Daemon: the normal path stops (and joins) the pool before exit; a pool that was
        # never stopped (a crashed start-up, a test) must not keep the process alive.
        self._pool.threadFactory = _DaemonThread

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
