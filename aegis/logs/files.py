"""A log file written in batches: lines collect in memory and go out in one ``write``.

Why batches: a proxy writes a line for every request, thousands a second. One system call
per line costs more than building the line; one per batch (at most every ``interval``
seconds, or as soon as ``limit`` bytes are waiting) costs nothing worth measuring, and is
what nginx's ``access_log ... buffer= flush=`` does. The price is that a crash loses at most
the last second of lines; a normal stop flushes them (:meth:`close`).

The file is opened ``O_APPEND`` (several writers never overwrite each other's lines) and
reopened by :meth:`reopen`, which logrotate triggers with SIGUSR1 after renaming the file:
lines written before the signal are flushed into the renamed file, the rest go into the
new one, so none is lost. ``-`` means stdout (fd 1), which is never reopened.
"""

from __future__ import annotations

import os
from pathlib import Path

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

log = Logger()

STDOUT = "-"
FLUSH_INTERVAL = 1.0
FLUSH_BYTES = 64 * 1024
_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC


class BatchedLogFile:
    """Collects text lines and writes them to ``target`` (a path or ``-``) in batches.

    Not thread-safe: lines come from the reactor thread. Write errors (disk full, a
    removed mount) drop the batch and are reported once in the application log until a
    write succeeds again: a full disk must not stop the proxy.
    """

    def __init__(self, target: str, clock: IReactorTime, interval: float = FLUSH_INTERVAL,
                 limit: int = FLUSH_BYTES) -> None:
        self.target = target
        self._clock = clock
        self._interval = interval
        self._limit = limit
        self._lines: list[str] = []  # str, joined and encoded once per batch
        self._size = 0
        self._timer: IDelayedCall | None = None
        self._failing = False
        self._closed = False
        self._fd = self._open()

    def _open(self) -> int:
        if self.target == STDOUT:
            return 1
        return os.open(Path(self.target), _FLAGS, 0o640)

    def write(self, line: str) -> None:
        """Queue ``line`` (ending in a newline). Cheap: an append and an addition."""
        self._lines.append(line)
        self._size += len(line)
        if self._size >= self._limit or self._closed:
            self.flush()
        elif self._timer is None:
            self._timer = self._clock.callLater(self._interval, self._timed_flush)

    def _timed_flush(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> None:
        """Write everything queued now, in one system call (or a few, if partial)."""
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        if not self._lines:
            return
        if self._fd < 0:
            self._lines.clear()
            self._size = 0
            return
        data = "".join(self._lines).encode("utf-8", "backslashreplace")
        self._lines.clear()
        self._size = 0
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            if not self._failing:
                self._failing = True
                log.error("cannot write the log {target}: {error}; lines are dropped until "
                          "a write succeeds", target=self.target, error=exc.strerror or exc)
            return
        if self._failing:
            self._failing = False
            log.info("the log {target} is written again", target=self.target)

    def reopen(self) -> None:
        """Flush into the current file, then open ``target`` again (after logrotate renamed
        it). If the new open fails, keep writing to the old file and say why."""
        self.flush()
        if self.target == STDOUT or self._closed:
            return
        try:
            fd = self._open()
        except OSError as exc:
            log.error("cannot reopen the log {target}: {error}; still writing to the old "
                      "file", target=self.target, error=exc.strerror or exc)
            return
        os.close(self._fd)
        self._fd = fd
        log.info("reopened the log {target}", target=self.target)

    def close(self) -> None:
        """Flush and close (at the end of a stop, after the listeners drained). A line
        recorded after this is dropped: no file is left open behind a stopped service."""
        self.flush()
        self._closed = True
        if self._fd > 2:
            os.close(self._fd)
        self._fd = -1
