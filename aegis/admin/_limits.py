"""A request body limit that holds while the body arrives, not after.

twisted.web buffers every request body into ``request.content`` before any resource sees
the request, so a check in a handler would come after a 10 MB (or endless chunked) body
was already stored. :class:`BodyLimitedRequest` counts bytes as the channel delivers them:
a ``Content-Length`` above the limit, or a chunked body that grows past it, gets an
immediate ``413`` in the admin error shape and the connection is closed; nothing past the
limit is kept, and nothing after it is even read (the channel stops reading the socket).
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

MAX_BODY_BYTES = 1024 * 1024


class BodyLimitedRequest(Request):
    max_body = MAX_BODY_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._body_received = 0
        self.body_rejected = False

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self.max_body:
            super().gotLength(0)
            self.requestHeaders.removeHeader(b"expect")  # no "100 Continue" after a 413
            self._reject()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.body_rejected:
            return
        self._body_received += len(data)
        if self._body_received > self.max_body:
            self._reject()
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self.body_rejected:
            return  # answered already; the connection is closing
        super().requestReceived(command, path, version)

    def _reject(self) -> None:
        """Answer 413 and close through the channel (see
        :meth:`aegis.admin._channel.LimitedHTTPChannel.refuse`): the request never reaches a
        resource, and nothing the client sends afterwards is read."""
        self.body_rejected = True
        channel: Any = self.channel
        channel.refuse(413, "body_too_large",
                       f"request bodies are limited to {self.max_body} bytes")
