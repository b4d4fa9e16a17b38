"""Signed ACME requests over treq: nonces, JWS, and every retry rule of RFC 8555 in one place.

Why this layer exists rather than ``acme.client.ClientNetwork``: that class is synchronous
(requests), retries ``badNonce`` only once (at Pebble's 5% rejection about 2 in 1,000 POSTs
would still fail) and knows nothing of a reactor. Here every wait is a ``deferLater`` on the
injected clock, so tests move a :class:`~twisted.internet.task.Clock` instead of sleeping.

The rules, each with its reason:

* **Nonces** come from a pool fed by the ``Replay-Nonce`` header of *every* response; a HEAD
  to ``newNonce`` only when the pool is empty.
* **badNonce** → sign again with a fresh nonce, up to ``RetryPolicy.bad_nonce_attempts``.
* **5xx, resets, refused connections, timeouts** → bounded retries with exponential backoff;
  then :class:`AcmeUnavailable`, which the caller treats as a transient failure.
* **Retry-After / rateLimited**: a wait up to ``RetryPolicy.max_inline_wait`` is slept off
  and the request repeated; a longer one raises :class:`AcmeRateLimited` carrying the time,
  and until then this transport sends *nothing* (it fails at once, without network), so no
  caller can hammer a CA that asked us to wait.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

from acme import jws
from josepy.b64 import b64decode
from josepy.interfaces import JSONDeSerializable
from josepy.jwa import ES256
from josepy.jwk import JWKEC
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.error import ConnectError, ConnectionClosed, DNSLookupError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.web._newclient import RequestNotSent, RequestTransmissionFailed
from twisted.web.client import ResponseFailed

log = Logger()

ERROR_PREFIX = "urn:ietf:params:acme:error:"
JOSE_CONTENT_TYPE = b"application/jose+json"


class AcmeError(Exception):
    """Any failure talking to the ACME server. Messages never carry keys or tokens."""


class AcmeProblem(AcmeError):
    """The server answered with an RFC 7807 problem document."""

    def __init__(self, status: int, typ: str, detail: str, retry_after: float | None = None):
        self.status = status
        self.typ = typ
        self.detail = detail
        self.retry_after = retry_after
        super().__init__(f"ACME {self.code or typ} (HTTP {status}): {detail}")

    @property
    def code(self) -> str:
        """The short code (``badNonce``, ``rateLimited`` ...), or '' for foreign types."""
        return self.typ[len(ERROR_PREFIX):] if self.typ.startswith(ERROR_PREFIX) else ""


class AcmeRateLimited(AcmeError):
    """The server asked us to wait until ``retry_at`` (reactor seconds) before any request."""

    def __init__(self, retry_at: float, detail: str):
        self.retry_at = retry_at
        super().__init__(f"rate limited by the ACME server until later: {detail}")


class AcmeUnavailable(AcmeError):
    """The server kept failing (5xx, refused, reset, timeout) through every retry."""


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds of every retry loop; tests shrink the delays, production keeps these."""

    bad_nonce_attempts: int = 10
    transient_attempts: int = 4
    backoff_base: float = 1.0
    backoff_max: float = 30.0
    max_inline_wait: float = 60.0
    request_timeout: float = 30.0
    rate_limit_default: float = 3600.0


@dataclass(frozen=True)
class AcmeResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def location(self) -> str | None:
        return self.headers.get("location")

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            raise AcmeError(f"ACME server sent invalid JSON (HTTP {self.status})") from None

    def links(self, relation: str) -> list[str]:
        found = []
        for value in self.headers.get("link", "").split(","):
            if f'rel="{relation}"' in value and "<" in value:
                found.append(value[value.index("<") + 1 : value.index(">")])
        return found


def parse_retry_after(value: str | None, now: float, wall_now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - wall_now)


_TRANSIENT = (ConnectError, ConnectionClosed, DNSLookupError, ResponseFailed, TimeoutError,
              RequestNotSent, RequestTransmissionFailed)


def _is_cancellation(exc: BaseException) -> bool:
    """True for a cancellation, also when the HTTP client wraps it in its own failure."""
    if isinstance(exc, CancelledError):
        return True
    reasons = getattr(exc, "reasons", None) or []
    return any(getattr(reason, "check", lambda *a: None)(CancelledError) for reason in reasons)


class AcmeTransport:
    """Sends requests to one ACME server with the account key; see the module docstring.

    ``kid`` is the account URL once known (None signs with the JWK, for ``newAccount``).
    ``wall_clock`` gives Unix time for HTTP-date Retry-After values. ``pace``, when given,
    is awaited before every request: the lifecycle's request budget for this CA.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        http: Any,
        key: JWKEC,
        policy: RetryPolicy,
        wall_clock: Callable[[], float],
        pace: Callable[[], Deferred[None]] | None = None,
    ) -> None:
        self._pace = pace
        self._reactor = reactor
        self._http = http
        self._key = key
        self._policy = policy
        self._wall = wall_clock
        self._nonces: list[str] = []
        self.new_nonce_url: str | None = None
        self.blocked_until = 0.0

    def _check_gate(self) -> None:
        if self._reactor.seconds() < self.blocked_until:
            raise AcmeRateLimited(self.blocked_until, "an earlier Retry-After is still running")

    async def _sleep(self, seconds: float) -> None:
        await deferLater(self._reactor, seconds, lambda: None)

    async def _exchange(self, method: str, url: str, body: bytes | None) -> AcmeResponse:
        """One HTTP exchange under our own timeout (so a timeout and a cancellation by our
        caller stay distinguishable); harvests the Replay-Nonce."""
        timed_out = False

        def expire() -> None:
            nonlocal timed_out
            timed_out = True
            pending.cancel()

        if self._pace is not None:
            await self._pace()  # the per-CA request budget (aegis.certs.lifecycle.budget)
        headers = {b"user-agent": [b"aegis-acme"]}
        if body is not None:
            headers[b"content-type"] = [JOSE_CONTENT_TYPE]
        pending: Deferred[Any] = self._http.request(method, url, data=body, headers=headers)
        timer = self._reactor.callLater(self._policy.request_timeout, expire)
        try:
            response = await pending
            pending = response.content()
            content = await pending
        except Exception as exc:
            if timed_out:
                raise TimeoutError(f"no answer in {self._policy.request_timeout} s") from None
            if _is_cancellation(exc):
                raise CancelledError() from None  # our caller gave up: stop, no retry
            raise
        finally:
            if timer.active():
                timer.cancel()
        result = AcmeResponse(
            response.code,
            {k.decode("latin-1").lower(): b",".join(v).decode("latin-1")
             for k, v in response.headers.getAllRawHeaders()},
            content,
        )
        nonce = result.headers.get("replay-nonce")
        if nonce:
            self._nonces.append(nonce)
        return result

    async def _send(self, method: str, url: str, body: bytes | None) -> AcmeResponse:
        """One request with transient-failure retries (5xx, refused, reset, timeout)."""
        attempt = 0
        while True:
            self._check_gate()
            attempt += 1
            try:
                result = await self._exchange(method, url, body)
            except _TRANSIENT as exc:
                error = f"cannot reach the ACME server ({type(exc).__name__})"
            else:
                asks_wait = result.status == 503 and "retry-after" in result.headers
                if result.status < 500 or asks_wait:
                    return result
                error = f"ACME server error (HTTP {result.status})"
            if attempt >= self._policy.transient_attempts:
                raise AcmeUnavailable(error)
            delay = min(self._policy.backoff_max, self._policy.backoff_base * 2 ** (attempt - 1))
            log.info("acme_retry url={url} attempt={attempt} delay={delay} error={error}",
                     url=url, attempt=attempt, delay=delay, error=error)
            await self._sleep(delay)

    async def get(self, url: str) -> AcmeResponse:
        """An unauthenticated GET (the directory); problems raised as :class:`AcmeProblem`."""
        waits = 0
        while True:
            response = await self._send("GET", url, None)
            wait = self._classify(response, waits)
            if wait is None:
                return response
            waits += 1
            await self._sleep(wait)

    async def _nonce(self) -> bytes:
        if not self._nonces:
            if self.new_nonce_url is None:
                raise AcmeError("no newNonce URL: load the directory first")
            response = await self._send("HEAD", self.new_nonce_url, None)
            if not self._nonces:
                raise AcmeError(f"newNonce gave no Replay-Nonce (HTTP {response.status})")
        try:
            return b64decode(self._nonces.pop())
        except (ValueError, TypeError):
            raise AcmeError("the ACME server sent a malformed nonce") from None

    async def post(self, url: str, payload: JSONDeSerializable | dict[str, Any] | None,
                   kid: str | None) -> AcmeResponse:
        """POST a signed ``payload`` (None: POST-as-GET), retrying badNonce with fresh nonces.

        Every attempt is signed anew: a nonce is good for one request only.
        """
        if payload is None:
            raw = b""
        elif isinstance(payload, dict):
            raw = json.dumps(payload).encode()
        else:
            raw = payload.json_dumps().encode()
        bad_nonces = waits = 0
        while True:
            nonce = await self._nonce()
            signed = jws.JWS.sign(raw, key=self._key, alg=ES256, nonce=nonce, url=url,
                                  kid=kid).json_dumps().encode()
            response = await self._send("POST", url, signed)
            try:
                wait = self._classify(response, waits)
            except AcmeProblem as problem:
                bad_nonces += 1
                if problem.code != "badNonce" or bad_nonces >= self._policy.bad_nonce_attempts:
                    raise
                log.debug("acme_bad_nonce url={url} attempt={attempt}", url=url,
                          attempt=bad_nonces)
                continue
            if wait is None:
                return response
            waits += 1
            await self._sleep(wait)

    def _classify(self, response: AcmeResponse, waits_so_far: int) -> float | None:
        """None for success; seconds to wait before repeating; or raise the problem.

        Retry-After on 429/503 (or a ``rateLimited`` problem) is slept off inline when short
        (twice at most); a longer one closes the gate and raises :class:`AcmeRateLimited`.
        """
        if response.status < 400:
            return None
        problem = self._problem(response)
        if response.status in (429, 503) or problem.code == "rateLimited":
            wait = problem.retry_after
            if wait is None:
                wait = self._policy.rate_limit_default
            if wait <= self._policy.max_inline_wait and waits_so_far < 2:
                log.info("acme_retry_after wait={wait}", wait=wait)
                return wait
            self.blocked_until = max(self.blocked_until, self._reactor.seconds() + wait)
            raise AcmeRateLimited(self.blocked_until, problem.detail or problem.typ)
        raise problem

    def retry_after(self, response: AcmeResponse) -> float | None:
        """The response's Retry-After in seconds (delta-seconds or HTTP date), or None."""
        return parse_retry_after(
            response.headers.get("retry-after"), self._reactor.seconds(), self._wall()
        )

    def _problem(self, response: AcmeResponse) -> AcmeProblem:
        retry_after = self.retry_after(response)
        try:
            document = json.loads(response.body)
            typ = str(document.get("type", "about:blank"))
            detail = str(document.get("detail", ""))[:500]
        except (ValueError, AttributeError):
            typ, detail = "about:blank", f"HTTP {response.status} without a problem document"
        return AcmeProblem(response.status, typ, detail, retry_after)
