"""The e-mail channel: the expiry mail Let's Encrypt no longer sends, over SMTP with
Twisted's own client (:class:`twisted.mail.smtp.ESMTPSenderFactory`).

Transport security (``AEGIS_ALERT_SMTP_SECURITY``): ``starttls`` (default; the server must
offer STARTTLS or the attempt fails — a password is never sent in clear), ``tls`` (TLS from
the first byte, port 465) or ``none`` (a local relay on loopback). The server certificate
is verified against the system roots, or ``AEGIS_ALERT_SMTP_CA_BUNDLE``. With a user name
the client authenticates (CRAM-MD5, LOGIN or PLAIN, over TLS only); the password comes from
``AEGIS_ALERT_SMTP_PASSWORD`` and is never logged.

Each alert is one message to every recipient; its ``Message-ID`` carries the alert's
idempotency key, so a mail filter can drop duplicates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from io import BytesIO
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.ssl import Certificate, optionsForClientTLS, trustRootFromCertificates
from twisted.mail.smtp import ESMTPSenderFactory

from aegis.monitor.alerts import Alert
from aegis.monitor.delivery import DeliveryError

SECURITY_MODES = ("starttls", "tls", "none")
TIMEOUT = 30


@dataclass(frozen=True)
class MailSettings:
    """Where and how to send. ``repr`` hides the password."""

    host: str
    port: int
    sender: str
    recipients: tuple[str, ...]
    security: str = "starttls"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_certificates: tuple[Certificate, ...] = ()


def message(alert: Alert, sender: str, recipients: Sequence[str]) -> bytes:
    """The RFC 5322 message for ``alert``: a plain-text summary of its facts."""
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = ", ".join(recipients)
    mail["Subject"] = f"[aegis {alert.severity}] {alert.summary}"
    mail["Date"] = format_datetime(alert.at)
    mail["Message-ID"] = make_msgid(idstring=alert.key, domain="aegis.invalid")
    mail["X-Aegis-Event"] = alert.kind
    mail["Idempotency-Key"] = alert.key
    payload = alert.payload()
    lines = [alert.summary, "", f"kind: {alert.kind}", f"severity: {alert.severity}",
             f"subject: {alert.subject}", f"at: {payload['at']}"]
    for key, value in sorted(payload["details"].items()):
        shown = ", ".join(map(str, value)) if isinstance(value, list) else value
        lines.append(f"{key}: {shown}")
    lines += ["", "Sent by Aegis (AEGIS_ALERT_SMTP_*). The same alert is not sent twice."]
    mail.set_content("\n".join(lines) + "\n")
    return mail.as_bytes()


class MailChannel:
    """Sends alerts as mail; see the module docstring."""

    label = "mail"

    def __init__(self, reactor: Any, settings: MailSettings, timeout: int = TIMEOUT) -> None:
        self._reactor = reactor
        self._settings = settings
        self._timeout = timeout

    def __repr__(self) -> str:
        return "MailChannel(<hidden>)"

    def _tls_options(self) -> Any:
        roots = self._settings.ca_certificates
        trust = trustRootFromCertificates(list(roots)) if roots else None
        return optionsForClientTLS(self._settings.host, trustRoot=trust)

    def send(self, alert: Alert) -> Deferred[None]:
        return Deferred.fromCoroutine(self._send(alert))

    async def _send(self, alert: Alert) -> None:
        s = self._settings
        sent: Deferred[Any] = Deferred()
        body = BytesIO(message(alert, s.sender, s.recipients))
        secret = s.password.encode("utf-8") if s.password is not None else None
        factory = ESMTPSenderFactory(
            s.username.encode("utf-8") if s.username else None, secret, s.sender,
            list(s.recipients), body, sent, retries=0, timeout=self._timeout,
            contextFactory=self._tls_options() if s.security == "starttls" else None,
            requireAuthentication=bool(s.username),
            requireTransportSecurity=s.security == "starttls",
            hostname="aegis.invalid",
        )
        # connectTCP/connectSSL, not endpoints: the sender factory learns of a dropped
        # connection (a failed TLS verification after STARTTLS) only through
        # clientConnectionLost, which endpoints do not call.
        if s.security == "tls":
            connector = self._reactor.connectSSL(s.host, s.port, factory, self._tls_options(),
                                                 timeout=self._timeout)
        else:
            connector = self._reactor.connectTCP(s.host, s.port, factory,
                                                 timeout=self._timeout)
        sent.addTimeout(self._timeout * 2, self._reactor)  # a last resort
        try:
            try:
                await sent
            finally:
                connector.disconnect()
        except Exception as exc:
            raise DeliveryError(f"mail: not sent ({_reason(exc)})") from None


def _reason(exc: BaseException) -> str:
    """The SMTP reply code when the server gave one, else the exception type (its message
    may quote the server's banner, never our password, but keep it short anyway)."""
    code = getattr(exc, "code", None)
    return f"SMTP {code}" if isinstance(code, int) else type(exc).__name__


__all__ = ["SECURITY_MODES", "MailChannel", "MailSettings", "message"]
