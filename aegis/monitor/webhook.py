"""The webhook channel: one signed JSON POST per alert and URL.

Headers: ``Content-Type: application/json``, ``Idempotency-Key`` (the alert's transition
key: a receiver that sees it twice may drop the second), ``X-Aegis-Event`` (the kind) and,
when a secret is configured, ``X-Aegis-Signature: sha256=<hex>`` — HMAC-SHA256 of the exact
body bytes under ``AEGIS_ALERT_WEBHOOK_SECRET`` (the scheme GitHub uses; verify with a
constant-time compare). Any 2xx is delivered; anything else, a timeout or a connection
error is a failed attempt for :class:`aegis.monitor.delivery.Dispatcher` to retry.
The URL is never logged or shown (chat webhooks carry their token in the path): the
channel's label is ``webhook <n>``.
"""

from __future__ import annotations

import hashlib
import hmac
from contextlib import suppress
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol as _TwistedProtocol
from twisted.python.failure import Failure
from twisted.web.iweb import IResponse

from aegis.monitor.alerts import Alert
from aegis.monitor.delivery import DeliveryError

SIGNATURE_HEADER = "X-Aegis-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
TIMEOUT = 10.0


class _HTTP(Protocol):
    """The part of treq's ``HTTPClient`` (and ``StubTreq``) used here."""

    def request(self, method: str, url: str, **kwargs: Any) -> Deferred[Any]: ...


def sign(secret: bytes, body: bytes) -> str:
    """The ``X-Aegis-Signature`` value for ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, header: str) -> bool:
    """Whether ``header`` is the signature of ``body`` (for receivers and tests)."""
    return hmac.compare_digest(sign(secret, body), header)


class _Discard(_TwistedProtocol):
    """Reads and drops a response body (the answer's content does not matter)."""

    def __init__(self, done: Deferred[None]) -> None:
        self._done = done

    def connectionLost(self, reason: Failure | None = None) -> None:
        if not self._done.called:
            self._done.callback(None)


class WebhookChannel:
    """POSTs alerts to one URL; see the module docstring."""

    def __init__(self, http: _HTTP, clock: IReactorTime, url: str, secret: str | None,
                 label: str, timeout: float = TIMEOUT) -> None:
        self._http = http
        self._clock = clock
        self._url = url
        self._secret = secret.encode("utf-8") if secret else None
        self.label = label
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"WebhookChannel({self.label})"

    def send(self, alert: Alert) -> Deferred[None]:
        return Deferred.fromCoroutine(self._send(alert))

    async def _send(self, alert: Alert) -> None:
        body = alert.body()
        headers = {
            "Content-Type": ["application/json"],
            "User-Agent": ["aegis-alerts"],
            IDEMPOTENCY_HEADER: [alert.key],
            "X-Aegis-Event": [alert.kind],
        }
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = [sign(self._secret, body)]
        request = self._http.request("POST", self._url, headers=headers, data=body)
        request.addTimeout(self._timeout, self._clock)
        try:
            response: IResponse = await request
        except Exception as exc:
            raise DeliveryError(f"{self.label}: no answer ({type(exc).__name__})") from None
        drained: Deferred[None] = Deferred()
        response.deliverBody(_Discard(drained))
        drained.addTimeout(self._timeout, self._clock)
        with suppress(Exception):  # the status decides; an unread tail changes nothing
            await drained
        if not 200 <= response.code < 300:
            raise DeliveryError(f"{self.label}: answered HTTP {response.code}")


__all__ = ["IDEMPOTENCY_HEADER", "SIGNATURE_HEADER", "WebhookChannel", "sign", "verify"]
