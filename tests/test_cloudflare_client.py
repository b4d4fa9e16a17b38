"""Unit tests of the Cloudflare client over StubTreq and a Clock: envelopes, retries,
Retry-After, timeouts, error mapping, and secrets kept out of errors and logs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from aegis.sources.cloudflare.client import CloudflareClient, CloudflareError, Credentials
from aegis.sources.cloudflare.timefmt import format_go, format_rfc3339, parse_expires_on

TOKEN = "tok-SECRET-0123456789abcdef"
SERVICE_KEY = "v1.0-SERVICEKEY-abcdef0123456789"


class Scripted(Resource):
    """Plays a fixed list of answers (status, headers, body | None = hang), records requests."""

    isLeaf = True

    def __init__(self, answers: list[tuple[int, dict[str, str], bytes | None]]) -> None:
        super().__init__()
        self.answers = answers
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []

    def render(self, request: Request) -> bytes | int:
        headers = {
            k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()
        }
        assert request.method is not None and request.uri is not None
        self.seen.append(
            (
                request.method.decode(),
                request.uri.decode(),
                headers,
                request.content.read() if request.content else b"",
            )
        )
        status, extra, body = self.answers.pop(0)
        if body is None:
            return NOT_DONE_YET
        request.setResponseCode(status)
        for name, value in extra.items():
            request.setHeader(name, value)
        return body


def ok(result: Any) -> tuple[int, dict[str, str], bytes]:
    return (
        200,
        {},
        json.dumps({"success": True, "errors": [], "messages": [], "result": result}).encode(),
    )


def fail(status: int, code: int, message: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    return (
        status,
        headers,
        json.dumps(
            {
                "success": False,
                "messages": [],
                "result": None,
                "errors": [{"code": code, "message": message}],
            }
        ).encode(),
    )


def make(answers: list[Any], **options: Any) -> tuple[CloudflareClient, Scripted, Clock]:
    resource, clock = Scripted(answers), Clock()
    options.setdefault("backoff", 1.0)
    client = CloudflareClient(StubTreq(resource), clock, "https://cf.test/client/v4", **options)
    return client, resource, clock


@pytest.fixture
def captured() -> Iterator[list[LogEvent]]:
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def log_text(events: list[LogEvent]) -> str:
    return "\n".join(f"{formatEvent(e)} {e!r}" for e in events)


def outcome(d: Any) -> Any:
    results: list[Any] = []
    d.addBoth(results.append)
    return results[0] if results else None


TOKEN_CREDS = Credentials("api_token", TOKEN)


def test_success_returns_result_and_sends_bearer() -> None:
    client, resource, _ = make([ok({"id": "1"})])
    result = outcome(client.call("POST", "/certificates", TOKEN_CREDS, {"a": 1}))
    assert result == {"id": "1"}
    method, uri, headers, body = resource.seen[0]
    assert (method, uri) == ("POST", "/client/v4/certificates")
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"a": 1}


def test_service_key_header_and_deprecation_warning(captured: list[LogEvent]) -> None:
    client, resource, _ = make([ok({"id": "1"})])
    creds = Credentials("origin_ca_key", SERVICE_KEY)
    assert outcome(client.create_origin_certificate(creds, {})) == {"id": "1"}
    headers = resource.seen[0][2]
    assert headers["x-auth-user-service-key"] == SERVICE_KEY
    assert "authorization" not in headers
    text = log_text(captured)
    assert "deprecat" in text
    assert SERVICE_KEY not in text


def test_credentials_hide_secret_and_refuse_header_injection() -> None:
    assert TOKEN not in repr(TOKEN_CREDS) and TOKEN not in str(TOKEN_CREDS)
    for bad in ("", "a b", "tok\r\nX-Evil: 1", "é"):
        with pytest.raises(ValueError) as info:
            Credentials("api_token", bad)
        assert bad not in str(info.value) or bad == ""


def test_auth_error_is_not_retried_and_names_cloudflare_code(captured: list[LogEvent]) -> None:
    client, resource, _ = make([fail(400, 10000, "Authentication error")])
    error = outcome(client.call("GET", "/x", TOKEN_CREDS)).value
    assert isinstance(error, CloudflareError)
    assert len(resource.seen) == 1
    assert error.kind == "auth" and error.admin_status == 400
    assert "10000: Authentication error" in str(error)
    assert error.as_json()["cloudflare_errors"] == [
        {"code": 10000, "message": "Authentication error"}
    ]
    assert TOKEN not in repr(error.as_json()) + log_text(captured)


def test_token_echoed_by_cloudflare_is_scrubbed() -> None:
    client, _, _ = make([fail(400, 6111, f"Invalid format for Authorization header {TOKEN}")])
    error = outcome(client.call("GET", "/x", TOKEN_CREDS)).value
    assert TOKEN not in str(error) and TOKEN not in json.dumps(error.as_json())
    assert "<redacted>" in str(error)


def test_429_waits_for_retry_after_then_succeeds() -> None:
    client, resource, clock = make(
        [fail(429, 971, "Please wait", **{"Retry-After": "7"}), ok({"id": "2"})]
    )
    d = client.call("GET", "/x", TOKEN_CREDS)
    assert len(resource.seen) == 1
    clock.advance(6.9)
    assert len(resource.seen) == 1, "retried before Retry-After"
    clock.advance(0.2)
    assert len(resource.seen) == 2
    assert outcome(d) == {"id": "2"}


def test_retry_after_http_date() -> None:
    client, resource, clock = make([fail(503, 1000, "down"), ok({})])
    clock.advance(1_000_000)
    when = datetime.fromtimestamp(clock.seconds(), UTC) + timedelta(seconds=30)
    resource.answers[0][1]["Retry-After"] = when.strftime("%a, %d %b %Y %H:%M:%S GMT")
    d = client.call("GET", "/x", TOKEN_CREDS)
    clock.advance(29)
    assert len(resource.seen) == 1
    clock.advance(1.5)
    assert outcome(d) == {}


def test_too_long_retry_after_fails_at_once_with_advice() -> None:
    client, resource, _ = make(
        [fail(429, 971, "slow down", **{"Retry-After": "3600"})], max_retry_after=60
    )
    error = outcome(client.call("GET", "/x", TOKEN_CREDS)).value
    assert error.kind == "unavailable" and error.admin_status == 502
    assert error.as_json()["retry_after"] == 3600
    assert len(resource.seen) == 1


def test_5xx_retried_with_backoff_until_budget_spent() -> None:
    client, resource, clock = make([fail(502, 1000, "bad gateway")] * 3, max_attempts=3)
    d = client.call("GET", "/x", TOKEN_CREDS)
    clock.advance(0.99)
    assert len(resource.seen) == 1
    clock.pump([0.02, 2.0])
    assert len(resource.seen) == 3
    error = outcome(d).value
    assert error.kind == "unavailable" and error.http_status == 502
    assert "1000: bad gateway" in str(error)


def test_transient_1100_is_retried() -> None:
    client, resource, clock = make(
        [fail(400, 1100, "Failed to write certificate to Database"), ok({"id": "3"})]
    )
    d = client.call("POST", "/certificates", TOKEN_CREDS, {})
    clock.advance(1.0)
    assert outcome(d) == {"id": "3"} and len(resource.seen) == 2


def test_html_5xx_and_non_json_success() -> None:
    client, _, _ = make([(502, {}, b"<html>bad</html>")], max_attempts=1)
    assert outcome(client.call("GET", "/x", TOKEN_CREDS)).value.kind == "unavailable"
    client, _, _ = make([(200, {}, b"not json")])
    error = outcome(client.call("GET", "/x", TOKEN_CREDS)).value
    assert error.kind == "bad_response" and error.admin_status == 502


def test_timeout_then_retry_then_timeout_error() -> None:
    client, resource, clock = make([(200, {}, None), (200, {}, None)], timeout=5, max_attempts=2)
    d = client.call("GET", "/x", TOKEN_CREDS)
    clock.advance(5)
    clock.advance(1)
    assert len(resource.seen) == 2
    clock.advance(5)
    error = outcome(d).value
    assert isinstance(error, CloudflareError)
    assert error.kind == "timeout" and error.admin_status == 504


def test_oversized_body_is_refused() -> None:
    client, _, _ = make([(200, {}, b"x" * (1024 * 1024 + 10))])
    error = outcome(client.call("GET", "/x", TOKEN_CREDS)).value
    assert error.kind == "bad_response"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2041-03-23T00:00:00Z", datetime(2041, 3, 23, tzinfo=UTC)),
        ("2014-01-01T05:20:00.12345Z", datetime(2014, 1, 1, 5, 20, 0, 123450, tzinfo=UTC)),
        ("2019-04-15T09:46:00+02:00", datetime(2019, 4, 15, 7, 46, tzinfo=UTC)),
        ("2019-04-15 07:46:00 +0000 UTC", datetime(2019, 4, 15, 7, 46, tzinfo=UTC)),
        (
            "2019-04-15 07:46:00.123456789 +0000 UTC",
            datetime(2019, 4, 15, 7, 46, 0, 123456, tzinfo=UTC),
        ),
        ("2019-04-15 02:46:00 -0500 EST", datetime(2019, 4, 15, 7, 46, tzinfo=UTC)),
    ],
)
def test_expires_on_both_formats(text: str, expected: datetime) -> None:
    assert parse_expires_on(text) == expected


@pytest.mark.parametrize(
    "text", ["", "2019-04-15", "15/04/2019 07:46", "2019-13-01T00:00:00Z", None, 12]
)
def test_expires_on_garbage(text: Any) -> None:
    with pytest.raises(ValueError):
        parse_expires_on(text)


def test_time_formats_roundtrip() -> None:
    moment = datetime(2041, 3, 23, 1, 2, 3, tzinfo=timezone(timedelta(hours=2)))
    assert format_rfc3339(moment) == "2041-03-22T23:02:03Z"
    assert parse_expires_on(format_go(moment)) == moment


def test_caller_cancellation_stops_without_retry() -> None:
    client, resource, clock = make([(200, {}, None), ok({})], timeout=5)
    d = client.call("GET", "/x", TOKEN_CREDS)
    d.cancel()
    clock.advance(60)
    assert len(resource.seen) == 1
    error = outcome(d).value
    assert isinstance(error, Exception) and not isinstance(error, CloudflareError)
