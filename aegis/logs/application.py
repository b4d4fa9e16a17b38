"""The application log: ``twisted.logger`` events with a level and a line format.

``AEGIS_LOG_LEVEL`` (``debug``, ``info``, ``warn``, ``error``) drops events below it;
``AEGIS_LOG_FORMAT`` chooses ``text`` (Twisted's classic ``2026-12-02T05:47:46+0000
[namespace] message`` lines) or ``json``: one object per line, which journald, Loki and
ELK ingest as is::

    {"time":"2026-12-02T05:47:46.120Z","level":"info","namespace":"aegis.service",
     "message":"Aegis is ready"}

A JSON line carries the formatted message, the level, the namespace, an ``event`` name when
the code gave one (``proxy_reloaded``, ``cert_obtained``) and, for failures, the traceback.
Other event fields are left out on purpose: they may hold objects with no stable JSON form.

``aegis run`` starts this itself. Under ``twistd``, which owns the log observer, pass
``--logger=aegis.logs.twistd_observer`` to get the same level and format.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    globalLogBeginner,
    textFileLogObserver,
)
from zope.interface import implementer

from aegis.logs.access import _encode_json

LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn,
          "error": LogLevel.error}
FORMATS = ("text", "json")


@implementer(ILogObserver)
class JsonLinesObserver:
    """One JSON object per event and line on ``out`` (flushed per event, as Twisted's
    text observer does: application events are few)."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out

    def __call__(self, event: dict[str, Any]) -> None:
        moment = event.get("log_time") or time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment))
        level = event.get("log_level")
        record: dict[str, Any] = {
            "time": f"{stamp}.{int(moment * 1000) % 1000:03d}Z",
            "level": level.name if isinstance(level, type(LogLevel.info)) else "info",
            "namespace": event.get("log_namespace"),
            "message": formatEvent(event),
        }
        if isinstance(event.get("event"), str):
            record["event"] = event["event"]
        failure = event.get("log_failure")
        if failure is not None:
            record["traceback"] = failure.getTraceback()
        self._out.write(_encode_json(record) + "\n")
        self._out.flush()


def observer(level: str = "info", format: str = "text",
             out: IO[str] | None = None) -> ILogObserver:
    """The filtered observer for ``level`` and ``format`` (values as validated by
    :mod:`aegis.config`), writing to ``out`` (default stdout)."""
    out = sys.stdout if out is None else out
    inner: ILogObserver = (
        JsonLinesObserver(out) if format == "json" else textFileLogObserver(out))
    predicate = LogLevelFilterPredicate(defaultLogLevel=LEVELS[level])
    return FilteringLogObserver(inner, [predicate])


def start_application_log(level: str = "info", format: str = "text") -> None:
    """Begin ``twisted.logger`` output (``aegis run``); events buffered until now are
    written too, filtered the same way."""
    globalLogBeginner.beginLoggingTo([observer(level, format)], redirectStandardIO=False)


def twistd_observer() -> ILogObserver:
    """For ``twistd --logger=aegis.logs.twistd_observer``: the level and format of
    ``AEGIS_LOG_LEVEL`` and ``AEGIS_LOG_FORMAT`` (bad values exit 2, as ``aegis run``)."""
    from aegis.config import ConfigError, Settings
    from aegis.tap import exit_with_error

    try:
        settings = Settings.load({})
    except ConfigError as exc:
        exit_with_error(str(exc))
    return observer(settings.log_level, settings.log_format)
