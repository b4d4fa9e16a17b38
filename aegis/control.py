"""Signals an operator (or systemd, or logrotate) sends a running Aegis.

``SIGUSR1``  reopen the access log file (logrotate renamed it; see contrib/logrotate/aegis).
``SIGHUP``   reload: reopen the logs, re-read certificates and hosts from the store (what an
             API write publishes, for changes made by another process on the same database)
             and re-check the local CA's files. Listeners and connections stay as they are.
``SIGTERM``/``SIGINT`` are the reactor's (a graceful stop, :mod:`aegis.service`).

Handlers only schedule work onto the reactor thread (``callFromThread`` is safe in a signal
handler); the work itself runs there like any other event.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredLock, inlineCallbacks
from twisted.logger import Logger

from aegis import sdnotify
from aegis.config import Settings
from aegis.logs import AccessLog, BatchedLogFile

log = Logger()

InstallHandler = Callable[[int, Any], Any]


def open_access_log(settings: Settings, clock: Any) -> AccessLog | None:
    """The access log ``settings`` ask for, its file open (None for ``off``)."""
    if settings.access_log == "off":
        return None
    return AccessLog(BatchedLogFile(settings.access_log, clock), clock,
                     settings.access_log_format)


class Reloader:
    """What SIGHUP does, in order; each step's failure is logged and the next still runs,
    so a store error cannot keep the logs from being reopened (or the other way round)."""

    def __init__(self, reopen: Sequence[Callable[[], None]],
                 reloads: Sequence[tuple[str, Callable[[], Deferred[Any]]]]) -> None:
        self._reopen = tuple(reopen)
        self._reloads = tuple(reloads)
        self._lock = DeferredLock()

    def reopen_logs(self) -> None:
        for reopen in self._reopen:
            try:
                reopen()
            except Exception:
                log.failure("reopening a log failed")

    def reload(self) -> Deferred[None]:
        """One reload; a SIGHUP during a reload waits for it, then runs in turn."""
        return self._lock.run(self._reload)

    @inlineCallbacks
    def _reload(self) -> Any:
        sdnotify.notify(sdnotify.reloading_state())
        log.info("SIGHUP: reloading", event="reload_started")
        self.reopen_logs()
        failed = []
        for name, step in self._reloads:
            try:
                yield step()
            except Exception:
                failed.append(name)
                log.failure("reload of {what} failed; the previous state keeps serving",
                            what=name)
        sdnotify.notify("READY=1")
        log.info("SIGHUP reload finished{failed}", event="reload_finished",
                 failed=f" (failed: {', '.join(failed)})" if failed else "")


class SignalControl(Service):
    """Installs the SIGHUP and SIGUSR1 handlers while the service runs."""

    def __init__(self, reactor: Any, reloader: Reloader,
                 install: InstallHandler = signal.signal) -> None:
        self._reactor = reactor
        self._reloader = reloader
        self._install = install
        self._previous: dict[int, Any] = {}

    def _handlers(self) -> dict[int, Callable[[], object]]:
        return {signal.SIGHUP: self._reloader.reload, signal.SIGUSR1: self._reloader.reopen_logs}

    def startService(self) -> None:
        """Install the handlers. A Python handler found in place (twistd's SIGUSR1 rotation
        of its ``--logfile``) is chained: it still runs, after ours is scheduled."""
        super().startService()
        call = self._reactor.callFromThread
        for number, action in self._handlers().items():
            def handler(signum: int, frame: Any, action: Callable[[], object] = action,
                        number: int = number) -> None:
                call(action)
                previous = self._previous.get(number)
                if callable(previous):
                    previous(signum, frame)

            self._previous[number] = self._install(number, handler)

    def stopService(self) -> None:
        """Python handlers that were there before come back; otherwise the signals are
        ignored from now on: their default action kills the process, which would lose the
        access log's last batch while the listeners drain."""
        super().stopService()
        for number, previous in self._previous.items():
            self._install(number, previous if callable(previous) else signal.SIG_IGN)
        self._previous.clear()
