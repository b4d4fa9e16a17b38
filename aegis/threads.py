"""Where blocking work runs, as one small shape: a *runner*.

A runner takes a zero-argument callable and returns a Deferred of its result. Code that
must not block the reactor (SQLite, key generation, fsync, parsing thousands of
certificates) takes a runner instead of choosing a thread itself, so tests can pass
:func:`immediate_runner` and stay deterministic.

* :func:`reactor_pool_runner` — the reactor's shared thread pool: CPU and file work.
* ``aegis.store._runner.StoreThread`` — the store's own single thread (one SQLite
  connection must never be used by two threads at once).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.threads import deferToThreadPool

T = TypeVar("T")


class Runner(Protocol):
    def __call__(self, work: Callable[[], T], /) -> Deferred[T]: ...


def immediate_runner(work: Callable[[], T]) -> Deferred[T]:
    """Run ``work`` now, on the calling thread. For tests and command-line tools."""
    return maybeDeferred(work)


def reactor_pool_runner(reactor: Any) -> Runner:
    """A runner on the reactor's thread pool (``reactor`` provides IReactorThreads and
    IReactorFromThreads)."""

    def run(work: Callable[[], Any]) -> Deferred[Any]:
        return deferToThreadPool(reactor, reactor.getThreadPool(), work)

    return run
