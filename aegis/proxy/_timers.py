"""Coarse deadlines for many objects with one periodic sweep.

A proxy arms and disarms several timeouts per request (header deadline, keep-alive idle,
upstream answer, pooled-connection idle). ``IReactorTime.callLater`` costs a heap insert and a
cancel each time, measured at about a tenth of the request cost; here a deadline is a float
attribute and one :class:`~twisted.internet.task.LoopingCall` per engine checks every watched
object each ``interval`` seconds. A timeout therefore fires between its deadline and one
interval later; the interval is a quarter of the shortest configured timeout, at most 1 s.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

log = Logger()


def body_deadline(now: float, idle_timeout: float, cap: float, held: bool) -> float:
    """When a request body's wait ends: ``idle_timeout`` after ``now``, but never past the
    whole-request deadline ``cap`` (0: none). While Aegis itself holds the client back
    (``held``: the upstream is slow to take the body, or not connected yet) the client is not
    idle, and only the cap runs. HTTP/1.1 and HTTP/2 streams both use this."""
    if held:
        return cap
    idle = now + idle_timeout
    return min(idle, cap) if cap else idle


class Watched(Protocol):
    """An object with a deadline (``0.0``: none) and what to do when it passes."""

    deadline: float

    def expired(self) -> None: ...


class Sweeper:
    """Calls ``expired()`` on watched objects whose deadline has passed."""

    def __init__(self, clock: IReactorTime, interval: float) -> None:
        self._clock = clock
        self._interval = interval
        self._watched: set[Watched] = set()
        self._loop: LoopingCall | None = None

    def watch(self, thing: Watched) -> None:
        self._watched.add(thing)
        if self._loop is None:
            self._loop = LoopingCall(self._sweep)
            self._loop.clock = self._clock
            self._loop.start(self._interval, now=False)

    def unwatch(self, thing: Watched) -> None:
        self._watched.discard(thing)

    def _sweep(self) -> None:
        now = self._clock.seconds()
        for thing in [t for t in self._watched if 0.0 < t.deadline <= now]:
            thing.deadline = 0.0
            try:
                thing.expired()
            except Exception:
                log.failure("timeout handler raised")
        if not self._watched and self._loop is not None:
            loop, self._loop = self._loop, None
            loop.stop()
