"""Alert receivers for tests and for trying alerts by hand: a webhook receiver and an SMTP
server, both real servers on loopback.

* :class:`WebhookReceiver` — a twisted.web resource that records every POST (headers and
  body), verifies ``X-Aegis-Signature`` against the secret it is given, and can be told to
  answer the next requests with an error (to see retries with backoff).
* :class:`SMTPReceiver` — Twisted's ESMTP server with STARTTLS (given TLS options) and
  AUTH PLAIN/LOGIN against one user, keeping every message it accepts.

Start either with ``listen(reactor)`` on ``127.0.0.1`` and a free port.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from email.policy import default
from typing import Any

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IListeningPort
from twisted.mail import smtp
from twisted.mail.imap4 import LOGINCredentials, PLAINCredentials
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface import implementer

from aegis.monitor.webhook import SIGNATURE_HEADER, verify


@dataclass(frozen=True)
class ReceivedPost:
    """One webhook request as received."""

    path: str
    headers: dict[str, str]
    body: bytes
    signature_ok: bool | None  # None: no secret to check against

    def json(self) -> Any:
        return json.loads(self.body)


class _QuietSite(Site):
    """No access log: the receiver's own log lines would quote the (secret) URL path."""

    def log(self, request: Any) -> None:
        pass


class WebhookReceiver(Resource):
    """Records alerts POSTed to any path; see the module docstring."""

    isLeaf = True

    def __init__(self, secret: str | None = None) -> None:
        super().__init__()
        self._secret = secret.encode("utf-8") if secret else None
        self.received: list[ReceivedPost] = []
        self.fail_next = 0  # answer this many requests with ``fail_status``
        self.fail_status = 503
        self.refused = 0

    def render_POST(self, request: Any) -> bytes:
        body = request.content.read()
        headers = {k.decode("latin-1").lower(): v[-1].decode("latin-1")
                   for k, v in request.requestHeaders.getAllRawHeaders()}
        if self.fail_next > 0:
            self.fail_next -= 1
            self.refused += 1
            request.setResponseCode(self.fail_status)
            return b"try later\n"
        signature = headers.get(SIGNATURE_HEADER.lower())
        ok = None if self._secret is None else (
            signature is not None and verify(self._secret, body, signature))
        self.received.append(ReceivedPost(request.path.decode("latin-1"), headers, body, ok))
        request.setResponseCode(202 if ok is not False else 401)
        return b"ok\n"

    def listen(self, reactor: Any) -> IListeningPort:
        site = _QuietSite(self)
        site.noisy = False
        port: IListeningPort = reactor.listenTCP(0, site, interface="127.0.0.1")
        return port


@dataclass
class _Mailbox:
    messages: list[tuple[bytes, bytes, Message]] = field(default_factory=list)


@implementer(smtp.IMessage)
class _Message:
    def __init__(self, box: _Mailbox, origin: bytes, recipient: bytes) -> None:
        self._box, self._origin, self._recipient = box, origin, recipient
        self._lines: list[bytes] = []

    def lineReceived(self, line: bytes) -> None:
        self._lines.append(line)

    def eomReceived(self) -> Deferred[None]:
        raw = b"\n".join(self._lines) + b"\n"
        parsed = message_from_bytes(raw, policy=default)
        self._box.messages.append((self._origin, self._recipient, parsed))
        return succeed(None)

    def connectionLost(self) -> None:
        self._lines = []


@implementer(smtp.IMessageDelivery)
class _Delivery:
    def __init__(self, box: _Mailbox) -> None:
        self._box = box
        self._origin = b""

    def receivedHeader(self, helo: Any, origin: Any, recipients: Any) -> bytes:
        return b"Received: by the Aegis test SMTP receiver"

    def validateFrom(self, helo: Any, origin: Any) -> Any:
        self._origin = bytes(str(origin), "ascii")
        return origin

    def validateTo(self, user: Any) -> Any:
        recipient, origin = bytes(str(user.dest), "ascii"), self._origin
        return lambda: _Message(self._box, origin, recipient)


@implementer(IRealm)
class _Realm:
    def __init__(self, box: _Mailbox) -> None:
        self._box = box

    def requestAvatar(self, avatar_id: Any, mind: Any, *interfaces: Any) -> Any:
        return smtp.IMessageDelivery, _Delivery(self._box), lambda: None


class _AuthESMTP(smtp.ESMTP):
    """ESMTP that refuses mail before authentication when a user is configured."""

    def validateFrom(self, helo: Any, origin: Any) -> Any:
        if self.portal is not None and self.delivery is None:
            raise smtp.SMTPBadSender(origin, 530, b"authentication required")
        return super().validateFrom(helo, origin)


class SMTPReceiver:
    """An ESMTP server keeping every message; see the module docstring.

    ``tls`` (``CertificateOptions``) enables STARTTLS; ``user``/``password`` require AUTH.
    ``messages`` holds ``(mail from, rcpt to, parsed message)``, one per recipient.
    """

    def __init__(self, tls: Any = None, user: str | None = None,
                 password: str | None = None) -> None:
        self._box = _Mailbox()
        self._tls = tls
        self._portal = None
        if user is not None and password is not None:
            checker = InMemoryUsernamePasswordDatabaseDontUse()
            checker.addUser(user.encode(), password.encode())
            self._portal = Portal(_Realm(self._box), [checker])
        self.sessions = 0
        self.tls_sessions = 0

    @property
    def messages(self) -> list[tuple[bytes, bytes, Message]]:
        return self._box.messages

    def listen(self, reactor: Any) -> IListeningPort:
        receiver = self

        class Factory(smtp.SMTPFactory):
            protocol = _AuthESMTP

            def buildProtocol(self, addr: Any) -> Any:
                receiver.sessions += 1
                proto = super().buildProtocol(addr)
                proto.ctx = receiver._tls
                proto.challengers = {b"LOGIN": LOGINCredentials, b"PLAIN": PLAINCredentials}
                if receiver._portal is None:
                    proto.delivery = _Delivery(receiver._box)
                else:
                    proto.portal = receiver._portal
                original = proto.ext_STARTTLS

                def starttls(rest: bytes) -> None:
                    receiver.tls_sessions += 1
                    original(rest)

                proto.ext_STARTTLS = starttls
                return proto

        factory = Factory()
        factory.domain = b"receiver.aegis.invalid"
        factory.noisy = False
        port: IListeningPort = reactor.listenTCP(0, factory, interface="127.0.0.1")
        return port


__all__ = ["ReceivedPost", "SMTPReceiver", "WebhookReceiver"]
