"""The admin listener's access log line: what was asked, never what was sent along.

twisted.web's combined log format writes the whole request URI and the ``Referer``. A
client that puts the admin token in the query string (``?token=...``, refused with 401)
or a page whose address carries one would have it written to the log verbatim. This
format keeps the path and replaces a query string by ``?<redacted>``; the ``Referer`` is
left out, the ``User-Agent`` escaped as twisted.web does.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import address
from twisted.web.http import _escape

REDACTED_QUERY = b"?<redacted>"


def redacted_uri(uri: bytes) -> bytes:
    """``uri`` without its query string (and fragment), which may carry secrets."""
    path, separator, _ = uri.partition(b"?")
    path = path.partition(b"#")[0]
    return path + REDACTED_QUERY if separator else path


def admin_access_line(timestamp: str, request: Any) -> str:
    """An ``IAccessLogFormatter`` for the admin :class:`~twisted.web.server.Site`."""
    client = request.getClientAddress()
    ip = client.host if isinstance(client, address.IPv4Address | address.IPv6Address) else "-"
    return '"{ip}" - - {timestamp} "{method} {uri} {protocol}" {code} {length} "{agent}"'.format(
        ip=_escape(ip),
        timestamp=timestamp,
        method=_escape(request.method),
        uri=_escape(redacted_uri(request.uri)),
        protocol=_escape(request.clientproto),
        code=request.code,
        length=request.sentLength or "-",
        agent=_escape(request.getHeader(b"user-agent") or b"-"),
    )
