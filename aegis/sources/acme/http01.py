"""HTTP-01: the answers we publish, and the exact rules for serving them on port 80.

The responder keeps answers in memory (the HTTP listener must never wait on a disk) and
mirrors them into the store, so after a restart mid-order the CA's validation requests still
get their answer: :meth:`ChallengeResponder.load` reads them back at start.

:func:`challenge_response` is the whole request rule set as a pure function, so the HTTP
listener (any implementation) only has to call it for paths under the challenge prefix and
send what it returns. It touches no file system and decodes no percent-escapes: a path that
is not byte-for-byte ``/.well-known/acme-challenge/<base64url token>`` is a 404, which is
what makes ``../`` and ``%2e%2e%2f`` harmless.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import datetime

from twisted.internet.defer import Deferred
from zope.interface import implementer

from aegis.interfaces import IChallengeResponder, IStore, IStoreTransaction
from aegis.store.records import AcmeChallenge

CHALLENGE_PREFIX = "/.well-known/acme-challenge/"
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,256}")
CONTENT_TYPE = "text/plain"
NOT_FOUND = (404, b"Not Found\n")


def is_challenge_path(path: str | bytes) -> bool:
    """True if ``path`` is under the challenge prefix: such requests are answered by
    :func:`challenge_response` and never redirected to HTTPS nor proxied."""
    text = path.decode("latin-1") if isinstance(path, bytes) else path
    return text.startswith(CHALLENGE_PREFIX)


def _host_name(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host
    return host.rsplit(":", 1)[0].rstrip(".") if ":" in host else host.rstrip(".")


def challenge_response(
    method: str | bytes,
    path: str | bytes,
    responder: IChallengeResponder,
    host: str | bytes | None = None,
) -> tuple[int, bytes]:
    """``(status, body)`` for one request; the body is sent as ``text/plain``.

    200 with the key authorisation only for GET or HEAD of exactly
    ``/.well-known/acme-challenge/<token>`` (no query, no extra segment, token base64url)
    whose token the responder knows. With ``host`` given and a responder that records names
    (:class:`ChallengeResponder`), the Host header (port and trailing dot ignored) must be the
    name the answer was published for. Everything else: 404, body naming nothing.
    """
    verb = method.decode("latin-1") if isinstance(method, bytes) else method
    target = path.decode("latin-1") if isinstance(path, bytes) else path
    if verb not in ("GET", "HEAD") or not target.startswith(CHALLENGE_PREFIX):
        return NOT_FOUND
    token = target[len(CHALLENGE_PREFIX):]
    if not TOKEN_PATTERN.fullmatch(token):
        return NOT_FOUND
    answer = responder.key_authorization(token)
    if answer is None:
        return NOT_FOUND
    name_for = getattr(responder, "name_for", None)
    if host is not None and name_for is not None:
        wanted = name_for(token)
        given = host.decode("latin-1") if isinstance(host, bytes) else host
        if wanted is not None and _host_name(given) != wanted:
            return NOT_FOUND
    return 200, answer


@implementer(IChallengeResponder)
class ChallengeResponder:
    """HTTP-01 answers in memory, persisted through ``store``.

    ``publish`` fires once the answer is durable, so the ACME flow only asks the CA to
    validate what a restart would still serve. Lookups never block and never fail.
    """

    def __init__(self, store: IStore, now: Callable[[], datetime]) -> None:
        self._store = store
        self._now = now
        self._answers: dict[str, tuple[bytes, str]] = {}

    def key_authorization(self, token: str) -> bytes | None:
        entry = self._answers.get(token)
        return None if entry is None else entry[0]

    def name_for(self, token: str) -> str | None:
        entry = self._answers.get(token)
        return None if entry is None else entry[1]

    def publish(self, token: str, key_authorization: str, name: str) -> Deferred[None]:
        if not TOKEN_PATTERN.fullmatch(token):
            raise ValueError("an ACME token must be base64url")
        self._answers[token] = (key_authorization.encode("ascii"), name)
        record = AcmeChallenge(
            token=token, key_authorization=key_authorization, name=name, created_at=self._now()
        )

        def work(txn: IStoreTransaction) -> None:
            txn.put_acme_challenge(record)

        return self._store.transact(work)

    def withdraw(self, token: str) -> Deferred[None]:
        self._answers.pop(token, None)

        def work(txn: IStoreTransaction) -> None:
            txn.delete_acme_challenge(token)

        return self._store.transact(work)

    def withdraw_names(self, names: Sequence[str]) -> Deferred[None]:
        """Withdraw every answer published for one of ``names`` (an order that ended or
        was abandoned, also one from before a restart)."""
        wanted = set(names)
        for token in [t for t, (_, name) in self._answers.items() if name in wanted]:
            del self._answers[token]

        def work(txn: IStoreTransaction) -> None:
            for challenge in txn.list_acme_challenges():
                if challenge.name in wanted:
                    txn.delete_acme_challenge(challenge.token)

        return self._store.transact(work)

    def load(self) -> Deferred[None]:
        """Read every persisted answer back into memory (at start)."""

        def loaded(records: list[AcmeChallenge]) -> None:
            for record in records:
                self._answers[record.token] = (
                    record.key_authorization.encode("ascii"), record.name
                )

        return self._store.transact(lambda txn: txn.list_acme_challenges()).addCallback(loaded)
