"""Alert channels against real receivers on loopback: the webhook (signature, idempotency
key, retries with backoff) and SMTP mail (STARTTLS, AUTH, a refused plain session)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_twisted
import treq
import trustme
from OpenSSL import crypto
from twisted.internet import reactor
from twisted.internet.ssl import Certificate, CertificateOptions
from twisted.internet.task import Clock
from twisted.logger import LogEvent, formatEvent
from twisted.web.client import Agent, HTTPConnectionPool

from aegis.monitor.alerts import Alert
from aegis.monitor.delivery import DeliveryError, Dispatcher
from aegis.monitor.mail import MailChannel, MailSettings
from aegis.monitor.webhook import WebhookChannel, sign, verify
from aegis.testing.alerts import SMTPReceiver, WebhookReceiver
from tests.test_admin_api import logged as logged  # a fixture, shared

SECRET = "webhook-secret-for-tests"
PASSWORD = "smtp-pass-word-for-tests"


def an_alert(key: str = "k1") -> Alert:
    return Alert(kind="certificate_warning", key=key, at=datetime(2026, 5, 1, tzinfo=UTC),
                 severity="warning", subject="certificate:7",
                 summary="certificate certificate:7 (a.example.com) expires soon (warning)",
                 details={"names": ["a.example.com"], "certificate_id": 7,
                          "not_after": datetime(2026, 5, 20, tzinfo=UTC)})


def http_client() -> Any:
    return treq.client.HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, False)))


@pytest.fixture
def webhook() -> Iterator[tuple[WebhookReceiver, str]]:
    receiver = WebhookReceiver(SECRET)
    port = receiver.listen(reactor)
    yield receiver, f"http://127.0.0.1:{port.getHost().port}/hooks/aegis-token-in-path"
    pytest_twisted.blockon(port.stopListening())


def test_signature_is_hmac_sha256_of_the_exact_body() -> None:
    body = an_alert().body()
    assert sign(SECRET.encode(), body).startswith("sha256=")
    assert verify(SECRET.encode(), body, sign(SECRET.encode(), body))
    assert not verify(SECRET.encode(), body + b" ", sign(SECRET.encode(), body))
    assert not verify(b"other", body, sign(SECRET.encode(), body))


@pytest_twisted.ensureDeferred
async def test_webhook_posts_signed_json_with_idempotency_key(
    webhook: tuple[WebhookReceiver, str], logged: list[LogEvent],
) -> None:
    receiver, url = webhook
    channel = WebhookChannel(http_client(), reactor, url, SECRET, "webhook 1")
    dispatcher = Dispatcher(reactor, [channel])
    assert await dispatcher.dispatch(an_alert()) == [None]
    (post,) = receiver.received
    assert post.signature_ok is True
    assert post.headers["idempotency-key"] == "k1"
    assert post.headers["content-type"] == "application/json"
    assert post.headers["x-aegis-event"] == "certificate_warning"
    assert post.json()["details"]["not_after"] == "2026-05-20T00:00:00Z"
    assert dispatcher.stats["webhook 1"].delivered == {"certificate_warning": 1}
    text = "\n".join(formatEvent(e) or "" for e in logged)
    assert "aegis-token-in-path" not in text and SECRET not in text


@pytest_twisted.ensureDeferred
async def test_webhook_retries_with_backoff_until_the_receiver_answers(
    webhook: tuple[WebhookReceiver, str],
) -> None:
    receiver, url = webhook
    receiver.fail_next = 2
    channel = WebhookChannel(http_client(), reactor, url, SECRET, "webhook 1")
    dispatcher = Dispatcher(reactor, [channel], retry_delays=(0.05, 0.1, 0.2))
    started = reactor.seconds()
    assert await dispatcher.dispatch(an_alert()) == [None]
    assert reactor.seconds() - started >= 0.15  # waited 0.05 then 0.1
    assert receiver.refused == 2 and len(receiver.received) == 1
    assert dispatcher.stats["webhook 1"].attempts_failed == 2


@pytest_twisted.ensureDeferred
async def test_webhook_gives_up_after_the_last_retry_and_says_why(
    webhook: tuple[WebhookReceiver, str],
) -> None:
    receiver, url = webhook
    receiver.fail_next = 10
    channel = WebhookChannel(http_client(), reactor, url, SECRET, "webhook 1")
    dispatcher = Dispatcher(reactor, [channel], retry_delays=(0.01, 0.01))
    assert await dispatcher.dispatch(an_alert()) == ["webhook 1: answered HTTP 503"]
    assert receiver.refused == 3
    assert dispatcher.stats["webhook 1"].failed == {"certificate_warning": 1}


@pytest_twisted.ensureDeferred
async def test_webhook_to_a_closed_port_fails_without_naming_the_url() -> None:
    channel = WebhookChannel(http_client(), reactor, "http://127.0.0.1:9/secret-path",
                             None, "webhook 2", timeout=2)
    with pytest.raises(DeliveryError) as caught:
        await channel.send(an_alert())
    assert "secret-path" not in str(caught.value) and "webhook 2" in str(caught.value)


def test_retry_schedule_moves_with_the_clock() -> None:
    """Backoff is on the injected clock: nothing is retried before its delay."""
    clock, attempts = Clock(), []

    class Flaky:
        label = "flaky"

        def send(self, alert: Alert) -> Any:
            attempts.append(clock.seconds())
            raise DeliveryError("down")

    results: list[Any] = []
    Dispatcher(clock, [Flaky()], retry_delays=(10, 30)).dispatch(an_alert()).addCallback(
        results.append)
    assert attempts == [0]
    clock.advance(9.9)
    assert attempts == [0]
    clock.advance(0.1)
    clock.advance(30)
    assert attempts == [0, 10, 40] and results == [["down"]]


def tls_for(ca: trustme.CA) -> tuple[CertificateOptions, tuple[Certificate, ...]]:
    leaf = ca.issue_cert("localhost")
    key = crypto.load_privatekey(crypto.FILETYPE_PEM, leaf.private_key_pem.bytes())
    cert = crypto.load_certificate(crypto.FILETYPE_PEM, leaf.cert_chain_pems[0].bytes())
    options = CertificateOptions(privateKey=key, certificate=cert)
    return options, (Certificate.loadPEM(ca.cert_pem.bytes()),)


def mail_settings(port: int, roots: tuple[Certificate, ...], **changes: Any) -> MailSettings:
    values: dict[str, Any] = {
        "host": "localhost", "port": port, "sender": "aegis@example.com",
        "recipients": ("ops@example.com", "oncall@example.com"), "security": "starttls",
        "username": "aegis", "password": PASSWORD, "ca_certificates": roots}
    values.update(changes)
    return MailSettings(**values)


@pytest_twisted.ensureDeferred
async def test_mail_over_starttls_with_auth_reaches_the_receiver(
    logged: list[LogEvent],
) -> None:
    options, roots = tls_for(trustme.CA())
    receiver = SMTPReceiver(tls=options, user="aegis", password=PASSWORD)
    port = receiver.listen(reactor)
    try:
        channel = MailChannel(reactor, mail_settings(port.getHost().port, roots))
        await channel.send(an_alert("mail-key-1"))
    finally:
        await port.stopListening()
    assert receiver.tls_sessions == 1
    assert [(o, r) for o, r, _m in receiver.messages] == [
        (b"aegis@example.com", b"ops@example.com"), (b"aegis@example.com", b"oncall@example.com")]
    message = receiver.messages[0][2]
    assert message["Subject"] == ("[aegis warning] certificate certificate:7 (a.example.com) "
                                  "expires soon (warning)")
    assert message["Idempotency-Key"] == "mail-key-1"
    assert "mail-key-1" in message["Message-ID"]
    assert "not_after: 2026-05-20T00:00:00Z" in message.get_content()
    assert PASSWORD not in "\n".join(formatEvent(e) or "" for e in logged)
    assert PASSWORD not in repr(channel) + repr(mail_settings(1, roots))


@pytest_twisted.ensureDeferred
async def test_mail_refuses_a_server_without_starttls() -> None:
    """The password is never sent in clear: no STARTTLS offered means no mail."""
    receiver = SMTPReceiver(tls=None, user="aegis", password=PASSWORD)
    port = receiver.listen(reactor)
    try:
        channel = MailChannel(reactor, mail_settings(port.getHost().port, ()), timeout=5)
        with pytest.raises(DeliveryError):
            await channel.send(an_alert())
    finally:
        await port.stopListening()
    assert receiver.messages == []


@pytest_twisted.ensureDeferred
async def test_mail_with_a_wrong_password_is_refused() -> None:
    options, roots = tls_for(trustme.CA())
    receiver = SMTPReceiver(tls=options, user="aegis", password=PASSWORD)
    port = receiver.listen(reactor)
    try:
        channel = MailChannel(reactor, mail_settings(port.getHost().port, roots,
                                                     password="wrong-password-000"), timeout=5)
        with pytest.raises(DeliveryError) as caught:
            await channel.send(an_alert())
    finally:
        await port.stopListening()
    assert receiver.messages == [] and "wrong-password" not in str(caught.value)


@pytest_twisted.ensureDeferred
async def test_mail_refuses_an_untrusted_server_certificate() -> None:
    options, _roots = tls_for(trustme.CA())
    _other, other_roots = tls_for(trustme.CA())
    receiver = SMTPReceiver(tls=options, user="aegis", password=PASSWORD)
    port = receiver.listen(reactor)
    try:
        channel = MailChannel(reactor, mail_settings(port.getHost().port, other_roots),
                              timeout=5)
        with pytest.raises(DeliveryError):
            await channel.send(an_alert())
    finally:
        await port.stopListening()
    assert receiver.messages == []
