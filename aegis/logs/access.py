"""The access log: one line per request, built with one format call, written in batches.

Two formats:

``combined``
    nginx's (and Apache's) ``combined``, byte for byte in layout, so goaccess, fail2ban and
    every log shipper read it::

        203.0.113.7 - - [02/Dec/2026:05:47:46 +0000] "GET /a?b=1 HTTP/1.1" 200 1024 "-" "curl/8.5.0"

    Times are UTC. Request line, referer and user agent are escaped as nginx does: ``"``,
    ``\\``, control and non-ASCII bytes become ``\\xHH``, so a line is always one line.

``json``
    one JSON object per line with the fields of ``combined`` plus the virtual host, the
    scheme and the upstream's time to the response head (``upstream_ms``, null when Aegis
    answered itself: redirects, 404, ACME challenges).

The proxy calls :meth:`AccessLog.record` for every finished request on the reactor thread.
It does the least it can: a cached timestamp (formatted once per second), one pass over
the header list for ``Referer`` and ``User-Agent``, one f-string (or one C-encoded JSON
dict), and an append to :class:`aegis.logs.files.BatchedLogFile`.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from aegis.logs.files import BatchedLogFile
from aegis.proxy.routing import AccessLog as RecordRequest
from aegis.proxy.routing import ConnectionInfo, RequestHead

log = Logger()

FORMATS = ("combined", "json")
_UNSAFE = re.compile(rb'[^\x20\x21\x23-\x5b\x5d-\x7e]')
_PROTOCOL = {"1.0": "HTTP/1.0", "1.1": "HTTP/1.1", "2": "HTTP/2.0"}
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_encode_json: Callable[[object], str] = json.JSONEncoder(
    ensure_ascii=True, separators=(",", ":")).encode


def escaped(value: bytes) -> str:
    """nginx's escaping of logged request data: printable ASCII except ``"`` and ``\\``
    as is, everything else ``\\xHH``."""
    if _UNSAFE.search(value) is None:
        return value.decode("ascii")
    return _UNSAFE.sub(lambda found: b"\\x%02X" % found[0][0], value).decode("ascii")


def _referer_and_agent(head: RequestHead) -> tuple[bytes | None, bytes | None]:
    referer = agent = None
    for name, value in head.headers:
        size = len(name)
        if size == 10 and name.lower() == b"user-agent":
            agent = value
        elif size == 7 and name.lower() == b"referer":
            referer = value
    return referer, agent


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "backslashreplace")


class AccessLog:
    """Formats request records into a :class:`BatchedLogFile`; ``record`` is what the proxy
    engine calls (``ProxyLimits.access_log``)."""

    def __init__(self, file: BatchedLogFile, clock: IReactorTime,
                 format: str = "combined") -> None:
        if format not in FORMATS:
            raise ValueError(f"access log format must be one of {', '.join(FORMATS)}")
        self.file = file
        self.format = format
        self._clock = clock
        self._second = -1
        self._stamp = ""
        self._reported = False
        self.record: RecordRequest = self._combined if format == "combined" else self._json

    def _now(self) -> str:
        second = int(self._clock.seconds())
        if second != self._second:
            self._second = second
            self._stamp = self._format_time(time.gmtime(second))
        return self._stamp

    def _format_time(self, moment: time.struct_time) -> str:
        if self.format == "json":
            return time.strftime("%Y-%m-%dT%H:%M:%SZ", moment)
        return (f"{moment.tm_mday:02d}/{_MONTHS[moment.tm_mon - 1]}/{moment.tm_year}:"
                f"{moment.tm_hour:02d}:{moment.tm_min:02d}:{moment.tm_sec:02d} +0000")

    def _combined(self, head: RequestHead, conn: ConnectionInfo, status: int, sent: int,
                  upstream_ms: int | None) -> None:
        try:  # free in Python 3.11 unless it raises: a bad record must not break a request
            referer, agent = _referer_and_agent(head)
            self.file.write(
                f'{conn.client_host} - - [{self._now()}] "{escaped(head.method)} '
                f'{escaped(head.target)} {_PROTOCOL[head.version]}" {status} {sent} '
                f'"{"-" if referer is None else escaped(referer)}" '
                f'"{"-" if agent is None else escaped(agent)}"\n')
        except Exception:
            self._failed()

    def _json(self, head: RequestHead, conn: ConnectionInfo, status: int, sent: int,
              upstream_ms: int | None) -> None:
        try:
            referer, agent = _referer_and_agent(head)
            self.file.write(_encode_json({
                "time": self._now(), "client": conn.client_host, "host": head.host or None,
                "scheme": conn.scheme, "method": head.method.decode("latin-1"),
                "uri": head.target.decode("utf-8", "backslashreplace"),
                "protocol": _PROTOCOL[head.version], "status": status, "bytes": sent,
                "referer": _text(referer), "user_agent": _text(agent),
                "upstream_ms": upstream_ms,
            }) + "\n")
        except Exception:
            self._failed()

    def _failed(self) -> None:
        """Say once that a record could not be formatted (the request itself went fine)."""
        if not self._reported:
            self._reported = True
            log.failure("cannot format an access log line; such requests are left out")
