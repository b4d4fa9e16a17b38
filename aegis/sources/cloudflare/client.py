"""A small Cloudflare API v4 client on treq: envelopes, retries, and secrets kept out of sight.

Why a client of our own rather than an SDK: Aegis needs four operations, Twisted-native I/O
(one ``HTTPClient`` with its own connection pool, the reactor passed in), and hard guarantees
that a credential never reaches a log line, an exception message or a ``repr``.

Retries are bounded (``max_attempts``) and cover what Cloudflare itself calls temporary: HTTP
429 and 5xx (waiting at least ``Retry-After`` when given), the transient error code 1100,
connection failures and timeouts. A ``Retry-After`` beyond ``max_retry_after`` is not slept
through inside an admin request: the caller gets an error that says when to try again.
Anything else (bad credentials, invalid input) fails at once with Cloudflare's own codes and
messages in :class:`CloudflareError`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, cast

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol as _TwistedProtocol
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from aegis.sources.cloudflare.errors import (
    AUTH_ERROR_CODES,
    TRANSIENT_ERROR_CODES,
    CloudflareError,
    CloudflareMessage,
    Credentials,
    ErrorKind,
    messages,
    scrubbed,
)
from aegis.sources.cloudflare.timefmt import parse_expires_on

__all__ = [
    "TRANSIENT_ERROR_CODES",
    "CloudflareClient",
    "CloudflareError",
    "CloudflareMessage",
    "Credentials",
    "parse_expires_on",
]

log = Logger(namespace="aegis.sources.cloudflare")

_MAX_BODY = 1024 * 1024


class _HTTP(Protocol):
    """The part of treq's ``HTTPClient`` (and ``StubTreq``) the client uses."""

    def request(
        self, method: str, url: str, *, headers: Headers | None = None, data: bytes | None = None
    ) -> Deferred[Any]: ...


class _BoundedBody(_TwistedProtocol):
    """Collects a response body up to a limit; cancellable (stops the transport)."""

    def __init__(self, done: Deferred[bytes], limit: int) -> None:
        self._done, self._limit, self._parts, self._size = done, limit, list[bytes](), 0

    def dataReceived(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._limit:
            self.stop()
            if not self._done.called:
                self._done.errback(_bad(f"response body larger than {self._limit} bytes"))
            return
        self._parts.append(data)

    def stop(self) -> None:
        if self.transport is not None:
            cast(Any, self.transport).stopProducing()

    def connectionLost(self, reason: Failure = ResponseDone()) -> None:  # type: ignore[assignment]  # noqa: B008
        if self._done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self._done.callback(b"".join(self._parts))
        else:
            self._done.errback(reason)


def _bad(summary: str, status: int | None = None) -> CloudflareError:
    return CloudflareError("bad_response", f"unexpected answer from Cloudflare: {summary}",
                           http_status=status)


def read_body(response: IResponse, limit: int = _MAX_BODY) -> Deferred[bytes]:
    protocol: _BoundedBody | None = None
    done: Deferred[bytes] = Deferred(lambda _: protocol.stop() if protocol else None)
    protocol = _BoundedBody(done, limit)
    response.deliverBody(protocol)
    return done


def _retry_after(value: bytes | None, clock: IReactorTime) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    text = value.decode("latin-1").strip()
    if text.isdigit():
        return float(min(int(text), 86400))
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, min(moment.timestamp() - clock.seconds(), 86400.0))


class CloudflareClient:
    """Calls Cloudflare API v4 at ``base_url``; every method returns a Deferred.

    ``http`` is a treq ``HTTPClient`` (see :meth:`create`) or a ``StubTreq`` in tests;
    ``clock`` times the per-attempt timeout and the waits between attempts; ``pace`` (the
    lifecycle's per-CA request budget) is awaited before every request, retries included.
    """

    def __init__(
        self,
        http: _HTTP,
        clock: IReactorTime,
        base_url: str,
        *,
        timeout: float = 30.0,
        max_attempts: int = 4,
        backoff: float = 1.0,
        max_backoff: float = 20.0,
        max_retry_after: float = 60.0,
        on_close: Any = None,
        pace: Callable[[], Deferred[None]] | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._http = http
        self._clock = clock
        self._base = base_url.rstrip("/")
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._max_retry_after = max_retry_after
        self._on_close = on_close
        self._pace = pace

    @property
    def base_url(self) -> str:
        """The API base URL (no trailing slash): names the CA in an issuer's identity."""
        return self._base

    @classmethod
    def create(cls, reactor: Any, base_url: str, **options: Any) -> CloudflareClient:
        """A client with its own ``HTTPConnectionPool`` (closed by :meth:`close`)."""
        from treq.client import HTTPClient

        from aegis.sources._http import pooled_agent

        agent, pool = pooled_agent(reactor, connectTimeout=options.get("timeout", 30.0))
        pool.cachedConnectionTimeout = 60
        return cls(HTTPClient(agent), reactor, base_url, on_close=pool.closeCachedConnections,
                   **options)

    def close(self) -> Deferred[None]:
        """Drop pooled connections (on service stop)."""
        if self._on_close is None:
            return Deferred.fromCoroutine(_nothing())
        result: Deferred[None] = self._on_close()
        return result

    # -- operations -------------------------------------------------------------------------

    def create_origin_certificate(
        self, credentials: Credentials, body: Mapping[str, Any]
    ) -> Deferred[Any]:
        """``POST /certificates``; fires with the ``result`` object."""
        if credentials.method == "origin_ca_key":
            log.warn(
                "Cloudflare Origin CA service key used (X-Auth-User-Service-Key): Cloudflare "
                "deprecates this method; switch to an API token with Origin CA permissions",
                event="cloudflare_service_key_deprecated",
            )
        return self.call("POST", "/certificates", credentials, dict(body))

    def order_certificate_pack(
        self, credentials: Credentials, zone_id: str, body: Mapping[str, Any]
    ) -> Deferred[Any]:
        """``POST /zones/{zone_id}/ssl/certificate_packs/order``."""
        return self.call(
            "POST", f"/zones/{zone_id}/ssl/certificate_packs/order", credentials, dict(body)
        )

    def get_certificate_pack(
        self, credentials: Credentials, zone_id: str, pack_id: str
    ) -> Deferred[Any]:
        """``GET /zones/{zone_id}/ssl/certificate_packs/{pack_id}``."""
        return self.call("GET", f"/zones/{zone_id}/ssl/certificate_packs/{pack_id}", credentials)

    # -- machinery --------------------------------------------------------------------------

    def call(
        self, method: str, path: str, credentials: Credentials, body: Any = None
    ) -> Deferred[Any]:
        """One API call with retries; fires with the envelope's ``result``.

        @raise CloudflareError: on every failure (as the Deferred's failure).
        """
        return Deferred.fromCoroutine(self._call(method, path, credentials, body))

    async def _call(self, method: str, path: str, credentials: Credentials, body: Any) -> Any:
        attempt = 0
        while True:
            attempt += 1
            if self._pace is not None:
                await self._pace()
            try:
                return await self._attempt(method, path, credentials, body)
            except CloudflareError as exc:
                error = scrubbed(exc, credentials.secret)
            retryable = error.kind in ("unavailable", "timeout")
            if not retryable or attempt >= self._max_attempts:
                log.warn(
                    "Cloudflare {method} {path} failed after {attempts} attempt(s): {error}",
                    method=method, path=path, attempts=attempt, error=str(error),
                    event="cloudflare_failed",
                )
                raise error
            delay = min(self._backoff * 2 ** (attempt - 1), self._max_backoff)
            if error.retry_after is not None:
                if error.retry_after > self._max_retry_after:
                    log.warn("Cloudflare asks to wait {seconds}s; not waiting that long",
                             seconds=error.retry_after, event="cloudflare_failed")
                    raise error
                delay = max(delay, error.retry_after)
            log.info(
                "Cloudflare {method} {path}: {error}; attempt {next} in {delay:.1f}s",
                method=method, path=path, error=str(error), next=attempt + 1, delay=delay,
                event="cloudflare_retry",
            )
            await deferLater(self._clock, delay, lambda: None)

    async def _attempt(
        self, method: str, path: str, credentials: Credentials, body: Any
    ) -> Any:
        headers = Headers({b"Accept": [b"application/json"], **credentials.headers()})
        data = None
        if body is not None:
            headers.setRawHeaders(b"Content-Type", [b"application/json"])
            data = json.dumps(body).encode("utf-8")
        exchange = Deferred.fromCoroutine(self._exchange(method, path, headers, data))
        # Our own timer rather than addTimeout: cancelling an Agent request surfaces as
        # ResponseNeverReceived, not CancelledError, and must still read as a timeout.
        timed_out = False

        def expire() -> None:
            nonlocal timed_out
            timed_out = True
            exchange.cancel()

        timer = self._clock.callLater(self._timeout, expire)
        try:
            status, retry_after, raw = await exchange
        except CloudflareError:
            raise
        except Exception as exc:
            if not timed_out and _is_cancellation(exc):
                raise  # the caller gave up (e.g. the admin client went away): no retries
            if timed_out:
                raise CloudflareError(
                    "timeout", f"Cloudflare did not answer within {self._timeout:g}s"
                ) from None
            raise CloudflareError(
                "unavailable", f"could not reach Cloudflare ({type(exc).__name__})"
            ) from None
        finally:
            if timer.active():
                timer.cancel()
        return self._envelope(status, retry_after, raw)

    async def _exchange(
        self, method: str, path: str, headers: Headers, data: bytes | None
    ) -> tuple[int, float | None, bytes]:
        response: IResponse = await self._http.request(
            method, self._base + path, headers=headers, data=data
        )
        retry_after = _retry_after(
            response.headers.getRawHeaders(b"retry-after", [None])[0], self._clock
        )
        raw = await read_body(response)
        return response.code, retry_after, raw

    def _envelope(self, status: int, retry_after: float | None, raw: bytes) -> Any:
        try:
            envelope = json.loads(raw)
        except ValueError:
            envelope = None
        transient_status = status == 429 or status >= 500
        if not isinstance(envelope, dict) or not isinstance(envelope.get("success"), bool):
            if transient_status:
                raise CloudflareError("unavailable", f"Cloudflare answered HTTP {status}",
                                      http_status=status, retry_after=retry_after)
            raise _bad(f"HTTP {status} without a JSON envelope", status)
        errors = messages(envelope.get("errors"))
        if envelope["success"] and 200 <= status < 300:
            return envelope.get("result")
        codes = {e.code for e in errors}
        if transient_status or codes & TRANSIENT_ERROR_CODES:
            raise CloudflareError(
                "unavailable", f"Cloudflare is temporarily unable to serve (HTTP {status})",
                http_status=status, errors=errors, retry_after=retry_after,
            )
        kind: ErrorKind = "auth" if codes & AUTH_ERROR_CODES or status in (401, 403) else "rejected"
        summary = ("Cloudflare refused the credentials" if kind == "auth"
                   else "Cloudflare rejected the request")
        raise CloudflareError(kind, f"{summary} (HTTP {status})", http_status=status,
                              errors=errors)


def _is_cancellation(exc: BaseException) -> bool:
    if isinstance(exc, CancelledError):
        return True
    reasons = getattr(exc, "reasons", None) or []
    return any(isinstance(r, Failure) and r.check(CancelledError) for r in reasons)


async def _nothing() -> None:
    return None
