"""HTTP-01 serving rules (ACCEPTANCE 30) and the responder's persistence."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from treq.testing import StubTreq
from twisted.web.resource import Resource
from twisted.web.server import Request
from zope.interface.verify import verifyObject

from aegis.interfaces import IChallengeResponder
from aegis.sources.acme.http01 import (
    ChallengeResponder,
    challenge_response,
    is_challenge_path,
)
from aegis.store.memory import MemoryStore

TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
KEYAUTH = TOKEN + ".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"


def _now() -> datetime:
    return datetime(2026, 5, 1, tzinfo=UTC)


@pytest.fixture
def responder() -> ChallengeResponder:
    responder = ChallengeResponder(MemoryStore(), _now)
    responder.publish(TOKEN, KEYAUTH, "app.example.com")
    return responder


def test_provides_interface(responder: ChallengeResponder) -> None:
    assert verifyObject(IChallengeResponder, responder)


def test_known_token_answered(responder: ChallengeResponder) -> None:
    path = f"/.well-known/acme-challenge/{TOKEN}"
    assert challenge_response("GET", path, responder) == (200, KEYAUTH.encode())
    assert challenge_response(b"HEAD", path.encode(), responder) == (200, KEYAUTH.encode())
    assert challenge_response("GET", path, responder, "app.example.com:80") == (
        200,
        KEYAUTH.encode(),
    )
    assert challenge_response("GET", path, responder, b"APP.example.com.") == (
        200,
        KEYAUTH.encode(),
    )


@pytest.mark.parametrize(
    "method, path, host",
    [
        ("POST", f"/.well-known/acme-challenge/{TOKEN}", None),
        ("PUT", f"/.well-known/acme-challenge/{TOKEN}", None),
        ("DELETE", f"/.well-known/acme-challenge/{TOKEN}", None),
        ("GET", "/.well-known/acme-challenge/unknownToken", None),
        ("GET", "/.well-known/acme-challenge/", None),
        ("GET", "/.well-known/acme-challenge/../../etc/passwd", None),
        ("GET", f"/.well-known/acme-challenge/../acme-challenge/{TOKEN}", None),
        ("GET", "/.well-known/acme-challenge/%2e%2e%2fetc%2fpasswd", None),
        ("GET", f"/.well-known/acme-challenge/%2e%2e%2f{TOKEN}", None),
        ("GET", f"/.well-known/acme-challenge/{TOKEN}/", None),
        ("GET", f"/.well-known/acme-challenge/{TOKEN}?x=1", None),
        ("GET", f"/.well-known/acme-challenge/{TOKEN}%00", None),
        ("GET", f"/.well-known/acme-challenge/{TOKEN}.", None),
        ("GET", f"/.well-known/acme-challenge//{TOKEN}", None),
        ("GET", f"//.well-known/acme-challenge/{TOKEN}", None),
        ("GET", f"/.WELL-KNOWN/acme-challenge/{TOKEN}", None),
        ("GET", f"http://app.example.com/.well-known/acme-challenge/{TOKEN}x", None),
        ("GET", f"/.well-known/acme-challenge/{TOKEN}", "other.example.com"),
        ("GET", f"/.well-known/acme-challenge/{TOKEN}", "evil.test:80"),
    ],
)
def test_everything_else_is_404(
    responder: ChallengeResponder, method: str, path: str, host: str | None
) -> None:
    status, body = challenge_response(method, path, responder, host)
    assert status == 404
    assert KEYAUTH.encode() not in body


def test_is_challenge_path() -> None:
    assert is_challenge_path(b"/.well-known/acme-challenge/x")
    assert not is_challenge_path("/.well-known/other")


def test_publish_refuses_non_base64url(responder: ChallengeResponder) -> None:
    with pytest.raises(ValueError):
        responder.publish("../x", "k", "a.test")


def test_answers_survive_restart() -> None:
    store = MemoryStore()
    first = ChallengeResponder(store, _now)
    first.publish(TOKEN, KEYAUTH, "app.example.com")
    first.publish("other", "other.x", "b.example.com")
    first.withdraw("other")
    second = ChallengeResponder(store, _now)
    assert second.key_authorization(TOKEN) is None
    second.load()
    assert second.key_authorization(TOKEN) == KEYAUTH.encode()
    assert second.name_for(TOKEN) == "app.example.com"
    assert second.key_authorization("other") is None


class _Listener(Resource):
    """How an HTTP listener uses the rules: text/plain, nothing else decides."""

    isLeaf = True

    def __init__(self, responder: ChallengeResponder) -> None:
        super().__init__()
        self._responder = responder

    def render(self, request: Request) -> bytes:
        status, body = challenge_response(
            request.method, request.uri, self._responder, request.getHeader(b"host")
        )
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"text/plain")
        return body


@pytest.mark.parametrize(
    "url, expected",
    [
        (f"http://app.example.com/.well-known/acme-challenge/{TOKEN}", 200),
        ("http://app.example.com/.well-known/acme-challenge/%2e%2e%2f%2e%2e%2fetc%2fpasswd", 404),
        ("http://app.example.com/.well-known/acme-challenge/..%2F..%2Fetc%2Fpasswd", 404),
        (f"http://wrong.example.com/.well-known/acme-challenge/{TOKEN}", 404),
    ],
)
def test_over_http(responder: ChallengeResponder, url: str, expected: int) -> None:
    stub = StubTreq(_Listener(responder))
    response = stub.get(url)
    result = []
    response.addCallback(lambda r: result.append(r))
    stub.flush()
    assert result[0].code == expected
    body = []
    result[0].content().addCallback(body.append)
    stub.flush()
    if expected == 200:
        assert body[0] == KEYAUTH.encode()
        assert result[0].headers.getRawHeaders(b"content-type") == [b"text/plain"]
    else:
        assert b"root:" not in body[0] and KEYAUTH.encode() not in body[0]


def test_post_over_http(responder: ChallengeResponder) -> None:
    stub = StubTreq(_Listener(responder))
    result = []
    stub.post(f"http://app.example.com/.well-known/acme-challenge/{TOKEN}").addCallback(
        result.append
    )
    stub.flush()
    assert result[0].code == 404
