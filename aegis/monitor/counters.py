"""Plain counters the hot paths bump: a dict or list increment, nothing else.

The TLS servername callback and the proxy's end-of-exchange run for every handshake and
every request; a ``prometheus_client`` call there would take its lock and build label
tuples each time. So they only add 1 to a slot here (on the reactor thread, so without a
lock), and :mod:`aegis.monitor.metrics` folds the slots into labelled series when scraped.

The request table is keyed by the request's host name, which for a wildcard host comes
from the client: it keeps at most :data:`MAX_HOSTS` keys and counts the rest under the
empty name; the collector maps names to their configured host at scrape time.
"""

from __future__ import annotations

from bisect import bisect_left

from OpenSSL import SSL
from twisted.internet.error import ConnectionDone, ConnectionLost

# Upstream latency histogram bounds, milliseconds (Prometheus' default buckets, in ms).
LATENCY_BOUNDS_MS: tuple[int, ...] = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
MAX_HOSTS = 4096

# Why a handshake failed: refused at certificate selection (the first three), not finished
# within AEGIS_TLS_HANDSHAKE_TIMEOUT, ended by an OpenSSL error (a client's alert, a
# protocol or version mismatch), or closed by the client before it finished.
SNI_INVALID = "sni_invalid"
VERSION_TOO_LOW = "version_too_low"
SELECTION_ERROR = "selection_error"
TIMEOUT = "timeout"
TLS_ERROR = "tls_error"
CLIENT_CLOSED = "client_closed"
HANDSHAKE_FAILURE_REASONS = (SNI_INVALID, VERSION_TOO_LOW, SELECTION_ERROR, TIMEOUT,
                             TLS_ERROR, CLIENT_CLOSED)


class TrafficCounters:
    """Handshakes by selection step, refusals by reason, requests by (host, status class),
    and the upstream latency histogram. Mutated on the reactor thread only."""

    def __init__(self) -> None:
        self.handshakes: dict[str, int] = {}
        self.handshake_failures: dict[str, int] = dict.fromkeys(HANDSHAKE_FAILURE_REASONS, 0)
        self.requests: dict[tuple[str, int], int] = {}
        self.latency_buckets: list[int] = [0] * (len(LATENCY_BOUNDS_MS) + 1)
        self.latency_sum_ms = 0

    def handshake(self, step: str) -> None:
        handshakes = self.handshakes
        handshakes[step] = handshakes.get(step, 0) + 1

    def handshake_failed(self, reason: str) -> None:
        self.handshake_failures[reason] += 1

    def handshake_timed_out(self) -> None:
        self.handshake_failures[TIMEOUT] += 1

    def handshake_ended(self, failure: object) -> None:
        """A handshake that failed with ``failure`` (what the transport loses the
        connection with): the client closing first, or any TLS error."""
        # EOF or a reset: the peer went away (OpenSSL 3 reports EOF as an SSL error)
        closed = isinstance(failure, ConnectionDone | ConnectionLost | SSL.ZeroReturnError
                            | SSL.SysCallError) or "unexpected eof" in str(failure)
        self.handshake_failures[CLIENT_CLOSED if closed else TLS_ERROR] += 1

    def proxied(self, host: str, status: int, upstream_ms: int | None) -> None:
        """One finished exchange (``status`` 0: aborted after the head went out)."""
        key = (host, status // 100)
        counts = self.requests
        if key in counts:
            counts[key] += 1
        elif len(counts) < MAX_HOSTS:
            counts[key] = 1
        else:
            other = ("", key[1])
            counts[other] = counts.get(other, 0) + 1
        if upstream_ms is not None:
            self.latency_buckets[bisect_left(LATENCY_BOUNDS_MS, upstream_ms)] += 1
            self.latency_sum_ms += upstream_ms


__all__ = ["HANDSHAKE_FAILURE_REASONS", "LATENCY_BOUNDS_MS", "MAX_HOSTS", "SELECTION_ERROR",
           "SNI_INVALID", "VERSION_TOO_LOW", "TrafficCounters"]
