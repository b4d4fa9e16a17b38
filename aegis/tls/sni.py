"""The HTTPS listener's TLS layer: a certificate per handshake, chosen by SNI, from memory.

:func:`https_factory` wraps the HTTP protocol factory. Each connection starts on a *gate*
context with the policy and no certificate; OpenSSL calls our servername callback after it
has parsed the ClientHello (however it was split across records or TCP segments) and
negotiated the version. The callback

1. refuses SNI values containing control characters, space, DEL or non-ASCII bytes, logging
   them sanitised (OpenSSL itself already rejects NUL);
2. asks the current :class:`~aegis.tls.selection.SelectionTable` for a certificate;
3. refuses the handshake if the negotiated version is below the matched host's
   ``tls_min_version`` (the version is fixed before this callback runs, so this is the only
   place to enforce a per-host minimum);
4. switches the connection to that certificate's context and records a
   :class:`~aegis.tls.transport.TLSConnectionInfo` on the TLS transport.

pyOpenSSL's wrapper ignores exceptions from the callback and carries on with the current
context (fail open). Here *everything* is caught, and "refuse" means leaving the connection
on the gate context: with no certificate, OpenSSL ends the handshake with a
``handshake_failure`` alert. Nothing a client sends can make a handshake succeed without a
deliberate choice.

One context per certificate, not one shared context
---------------------------------------------------
pyOpenSSL can set the leaf and key per connection (``Connection.use_certificate``) but
exposes no per-connection *chain* call (``SSL_add1_chain_cert``), and intermediates must be
served. Measured (docs/measurements.md): a context per certificate costs ~26 KB and 0.2-0.3 ms to
build and keeps the handshake rate flat, while the shared-context variant loses ~20%. So each
:class:`LoadedCertificate` gets its own policy context, built on first use and cached by
object identity in a weak map (a certificate the registry drops frees its context). The
session cache stays on the gate context, which OpenSSL keeps as the session context across
the switch, so resumption works for every certificate.

A changed certificate or host applies to the next handshake: the table is swapped, contexts
of new certificate objects are built on demand, and open connections keep what they have.

A choice is reused for the rest of its second
---------------------------------------------
Most handshakes repeat a few names. What a name gets depends only on the table, the
certificate lookup's ``generation`` (replaced on every registry reload) and the time, and
certificate validity is counted in whole seconds; so the choice (context, connection facts,
minimum version) is kept per raw SNI value until the second, the table or the generation
changes, at most 4,096 of them. Validity is judged at the start of the second. The ACME
source's "certificate wanted" note is therefore made at most once a second per name.
"""

from __future__ import annotations

import re
import socket
import weakref
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from OpenSSL import SSL
from OpenSSL._util import lib as _lib
from twisted.internet.interfaces import (
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
    IReactorTime,
)
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOProtocol
from zope.interface import implementer

from aegis.certs.model import LoadedCertificate
from aegis.monitor.counters import (
    SELECTION_ERROR,
    SNI_INVALID,
    VERSION_TOO_LOW,
    TrafficCounters,
)
from aegis.names import for_log, normalise_sni
from aegis.tls.policy import INTERMEDIATE, TLSPolicy, certificate_context, policy_context
from aegis.tls.policy import version_number as _version_number
from aegis.tls.selection import Selection, SelectionSource, SelectionTable
from aegis.tls.socket_tls import HandshakeRegistry, SocketTLS, install_servername, server_name
from aegis.tls.transport import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    TimedTLSFactory,
    TLSConnectionInfo,
)

log = Logger()

_VERSION_NAMES = {SSL.TLS1_2_VERSION: "1.2", SSL.TLS1_3_VERSION: "1.3"}


_FORBIDDEN_SNI = re.compile(rb"[\x00-\x20\x7f-\xff]")


def _forbidden_sni(raw: bytes) -> bool:
    """Control characters, space, DEL or non-ASCII: never part of a hostname on the wire."""
    return _FORBIDDEN_SNI.search(raw) is not None


# Normalising is a pure function of the bytes; most handshakes repeat a few names. Random
# names from a scanner only churn the cache back to the uncached cost.
_normalise_sni = lru_cache(maxsize=4096)(normalise_sni)


_MEMO_SIZE = 4096


@dataclass(frozen=True)
class _Choice:
    """What a handshake for one SNI value gets: the context to switch to, the facts for the
    HTTP layer, and the host's minimum TLS version (OpenSSL's number)."""

    context: SSL.Context
    info: TLSConnectionInfo
    min_version: int


@dataclass
class _Memo:
    """Choices made during one second against one table and certificate generation."""

    table: SelectionTable
    generation: object
    second: int
    choices: dict[bytes | None, _Choice] = field(default_factory=dict)


@implementer(IOpenSSLServerConnectionCreator)
class SNIConnectionCreator:
    """Creates server connections that pick their certificate by SNI.

    ``source.current()`` is read once per handshake; ``clock`` gives the handshake's moment
    for validity checks. ``counters`` (the metrics' :class:`TrafficCounters`) gets one
    increment per handshake.
    """

    def __init__(
        self,
        source: SelectionSource,
        clock: IReactorTime,
        policy: TLSPolicy = INTERMEDIATE,
        counters: TrafficCounters | None = None,
    ) -> None:
        self._source = source
        self._clock = clock
        self._policy = policy
        # Handshakes by step and refusals by reason: one dict increment per handshake.
        self._counters = counters or TrafficCounters()
        self._gate = policy_context(policy)
        self._handshaking = HandshakeRegistry()
        self._find_handshaking = self._handshaking.by_ssl.get
        self._servername_callback = install_servername(self._gate, self._servername)
        self._contexts: weakref.WeakKeyDictionary[LoadedCertificate, SSL.Context] = (
            weakref.WeakKeyDictionary()
        )
        self._unusable: weakref.WeakKeyDictionary[LoadedCertificate, bool] = (
            weakref.WeakKeyDictionary()
        )
        self._memo: _Memo | None = None  # made by the first handshake

    def serverConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        connection = SSL.Connection(self._gate, None)
        connection.set_app_data(tlsProtocol)
        return connection

    def socket_connection(self, sock: socket.socket, transport: object) -> SocketTLS:
        """A server connection on ``sock`` itself (OpenSSL's socket BIO), for
        :class:`~aegis.tls.direct.DirectTLSServer`; ``transport`` receives ``tls_info``."""
        return SocketTLS(self._gate, sock.fileno(), transport, self._handshaking)

    def context_for(self, certificate: LoadedCertificate) -> SSL.Context:
        """The cached policy context of ``certificate``, built on first use.

        Raises ``SSL.Error`` if its key does not match; the failure is remembered, so a bad
        certificate costs one log line, not a rebuild and a log line per handshake.
        """
        context = self._contexts.get(certificate)
        if context is None:
            if certificate in self._unusable:
                raise SSL.Error("certificate previously failed to load")
            try:
                context = certificate_context(certificate, self._policy)
            except SSL.Error:
                self._unusable[certificate] = True
                log.error(
                    "certificate {cert_id} ({source}) cannot be served: its key does not "
                    "match; using the fallback",
                    cert_id=certificate.id, source=certificate.source,
                )
                raise
            self._contexts[certificate] = context
        return context

    def _servername(self, ssl: Any, _alert: Any, _arg: Any) -> int:
        """OpenSSL's servername callback (a C callback: see :mod:`aegis.tls.socket_tls`).
        Returns 0 (go on) always: a refusal leaves the gate context, which has no
        certificate, so the handshake fails closed."""
        try:
            connection: SocketTLS | SSL.Connection | None = self._find_handshaking(ssl)
            if connection is not None:
                target = connection.transport
            else:  # Twisted's memory-BIO TLS (``unix:`` listeners): a pyOpenSSL connection
                connection = SSL.Connection._reverse_mapping.get(ssl)
                if connection is None:
                    log.error("TLS handshake refused: its connection is unknown")
                    return 0
                target = connection.get_app_data()
            self._choose(ssl, connection, target)
        except BaseException:
            # Staying on the gate context refuses the handshake: never fail open.
            log.failure("TLS certificate selection failed; handshake refused")
            self._counters.handshake_failed(SELECTION_ERROR)
        return 0

    def _choose(self, ssl: Any, connection: SocketTLS | SSL.Connection, target: Any) -> None:
        raw = server_name(ssl)
        memo = self._current_memo()
        choice = memo.choices.get(raw)
        if choice is None:
            if raw is not None and _forbidden_sni(raw):
                log.warn(
                    "TLS handshake refused: SNI {sni} contains control or non-ASCII "
                    "characters",
                    sni=for_log(raw),
                )
                self._counters.handshake_failed(SNI_INVALID)
                return
            choice = self._select(memo, raw)
        version = _lib.SSL_version(ssl)
        if version < choice.min_version:
            log.info(
                "TLS handshake refused: {sni} requires TLS {required}, client negotiated "
                "{negotiated}",
                sni=for_log(choice.info.server_name),
                required=_VERSION_NAMES[choice.min_version],
                negotiated=_VERSION_NAMES.get(version, hex(version)),
            )
            self._counters.handshake_failed(VERSION_TOO_LOW)
            return
        connection.set_context(choice.context)
        target.tls_info = choice.info
        self._counters.handshake(choice.info.step)

    def _current_memo(self) -> _Memo:
        """This second's choices, if the table and the certificates are unchanged.

        Most handshakes repeat a few names; a choice depends only on the name, the table,
        the certificate lookup's generation and the time, and certificate validity is
        counted in whole seconds. So a choice is reused for the rest of its second.
        """
        table = self._source.current()
        second = int(self._clock.seconds())
        generation = table.generation()
        memo = self._memo
        if (memo is None or memo.table is not table or memo.second != second
                or memo.generation is not generation):
            memo = self._memo = _Memo(table, generation, second)
        return memo

    def _select(self, memo: _Memo, raw: bytes | None) -> _Choice:
        name = _normalise_sni(raw)
        now = datetime.fromtimestamp(memo.second, UTC)
        context, selection = self._context_or_fallback(memo.table.select(name, now), memo.table)
        choice = _Choice(
            context=context,
            info=TLSConnectionInfo(
                server_name=selection.server_name,
                raw_server_name=raw,
                host=selection.host,
                certificate=selection.certificate,
                step=selection.step,
            ),
            min_version=_version_number(selection.min_version),
        )
        if len(memo.choices) < _MEMO_SIZE:  # random names from a scanner: just not kept
            memo.choices[raw] = choice
        return choice

    def _context_or_fallback(self, selection: Selection,
                             table: SelectionTable) -> tuple[SSL.Context, Selection]:
        try:
            return self.context_for(selection.certificate), selection
        except SSL.Error:
            pass
        fallback = table.fallback
        selection = Selection(fallback, "fallback", selection.server_name, selection.host,
                              selection.min_version)
        return self.context_for(fallback), selection


def https_factory(
    table_source: SelectionSource,
    wrapped_factory: IProtocolFactory,
    clock: IReactorTime,
    *,
    policy: TLSPolicy = INTERMEDIATE,
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    counters: TrafficCounters | None = None,
) -> TimedTLSFactory:
    """The HTTPS listener's TLS as a protocol factory (Twisted's memory-BIO TLS): SNI
    selection, policy, handshake deadline. TCP listeners use
    :func:`aegis.tls.endpoint.https_endpoint` instead (TLS on the socket, the same callback);
    this serves other sockets (``unix:``) and in-memory tests.

    Writes are not gathered per reactor turn
    (:class:`~aegis.tls.transport.DirectTimedTLSProtocol`): the proxy engine writes each
    response head with its first body bytes, and HTTP/2 batches its frames per read itself.

    ``policy.alpn`` is what ALPN offers (``h2`` and ``http/1.1`` by default; pass
    ``TLSPolicy(alpn=(b"http/1.1",))`` while the HTTP layer speaks only HTTP/1.1). The
    protocols of ``wrapped_factory`` find the handshake's outcome with
    :func:`aegis.tls.transport.connection_info` on their transport.
    """
    creator = SNIConnectionCreator(table_source, clock, policy, counters)
    return TimedTLSFactory(creator, wrapped_factory, clock, handshake_timeout,
                           gather_writes=False)
