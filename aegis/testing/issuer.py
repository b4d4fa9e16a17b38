"""``FakeIssuer``: an :class:`ICertificateIssuer` that signs real certificates in memory.

Why ship it: the lifecycle engine, a new source's wiring and a user's own experiments need
an issuer that answers at once (or after a chosen delay), on the injected clock, with real
X.509 chains a TLS handshake accepts (root → intermediate → leaf, built with
``cryptography``), and that fails on demand. It passes the same contract tests as the ACME
and Cloudflare Origin issuers (``tests/issuer_contract.py``).

What a test can script:

* ``lifetime`` of the certificates (6 days, 45 days, ...), ``identity``, ``key_kind``,
  ``source``;
* :meth:`fail_next` (the next N attempts fail, optionally with ``retry_at``),
  :meth:`fail_for` (every attempt for a name fails until :meth:`heal`), :meth:`down_until`
  (every attempt fails until the clock reaches a time, carrying that time as ``retry_at``);
* ``delay`` seconds before answering, through ``clock.callLater``, so in-flight states can
  be observed; cancelling the Deferred cancels the answer;
* ``window``: a function giving the CA-suggested renewal window, or None.

It counts :attr:`issue_calls`, :attr:`issued`, :attr:`abandon_calls`, and records the names
of each call in :attr:`requests`. Run it against an engine::

    clock = Clock()
    issuer = FakeIssuer(clock, lifetime=timedelta(days=6))
    engine = LifecycleEngine(clock, store, wrapper, {issuer.source: issuer}, reload=...)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from zope.interface import implementer

from aegis.crypto.keys import KeyKind
from aegis.interfaces import ICertificateIssuer

__all__ = ["FakeCA", "FakeIssuer", "IssuerFailure"]

Window = Callable[[datetime, datetime], tuple[datetime, datetime] | None]


class IssuerFailure(Exception):
    """A scripted failure; ``retry_at`` (epoch seconds) when the fake CA asks us to wait."""

    def __init__(self, message: str, retry_at: float | None = None) -> None:
        super().__init__(message)
        self.retry_at = retry_at


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Aegis Fake CA"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


class FakeCA:
    """A root and an intermediate (ECDSA P-256) that sign leaves for any public key."""

    def __init__(self, now: datetime, label: str = "Aegis Fake") -> None:
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = self._ca(_name(f"{label} Root"), self.root_key.public_key(),
                             _name(f"{label} Root"), self.root_key, now, path_length=1)
        self.intermediate_key = ec.generate_private_key(ec.SECP256R1())
        self.intermediate = self._ca(_name(f"{label} Intermediate"),
                                     self.intermediate_key.public_key(), self.root.subject,
                                     self.root_key, now, path_length=0)

    @staticmethod
    def _ca(subject: x509.Name, public_key: Any, issuer: x509.Name, signer: Any,
            now: datetime, path_length: int) -> x509.Certificate:
        return (
            x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length),
                           critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .sign(signer, hashes.SHA256())
        )

    def root_pem(self) -> bytes:
        return self.root.public_bytes(Encoding.PEM)

    def sign(self, public_key: Any, names: Sequence[str], not_before: datetime,
             not_after: datetime) -> bytes:
        """The PEM chain (leaf, intermediate) for ``public_key`` and exactly ``names``."""
        leaf = (
            x509.CertificateBuilder().subject_name(x509.Name([]))
            .issuer_name(self.intermediate.subject).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=True)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.intermediate_key, hashes.SHA256())
        )
        return leaf.public_bytes(Encoding.PEM) + self.intermediate.public_bytes(Encoding.PEM)


@implementer(ICertificateIssuer)
class FakeIssuer:
    """See the module docstring. Not thread-safe: call it from the reactor (or a test)."""

    def __init__(
        self,
        clock: IReactorTime,
        *,
        source: str = "fake",
        identity: str = "fake-ca test-account",
        key_kind: KeyKind = "ecdsa-p256",
        lifetime: timedelta = timedelta(days=45),
        delay: float = 0.0,
        window: Window | None = None,
        ca: FakeCA | None = None,
    ) -> None:
        self.source = source
        self.identity = identity
        self.key_kind = key_kind
        self.lifetime = lifetime
        self.delay = delay
        self.window = window
        self._clock = clock
        self.ca = ca or FakeCA(self.now())
        self.issue_calls = 0
        self.issued = 0
        self.abandon_calls = 0
        self.requests: list[tuple[str, ...]] = []
        self.abandoned: list[tuple[str, ...]] = []
        self.options: list[dict[str, Any]] = []
        self._fail_next: list[IssuerFailure] = []
        self._broken: dict[str, str] = {}
        self._down_until: float | None = None
        self._pending: list[IDelayedCall] = []

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.seconds(), UTC)

    # scripting

    def fail_next(self, count: int = 1, message: str = "the fake CA refused",
                  retry_at: float | None = None) -> None:
        """The next ``count`` calls of :meth:`issue` fail."""
        self._fail_next.extend(IssuerFailure(message, retry_at) for _ in range(count))

    def fail_for(self, name: str, message: str = "validation failed") -> None:
        """Every call including ``name`` fails until :meth:`heal`."""
        self._broken[name] = message

    def heal(self, name: str | None = None) -> None:
        """Undo :meth:`fail_for` for ``name`` (None: for every name)."""
        if name is None:
            self._broken.clear()
        else:
            self._broken.pop(name, None)

    def down_until(self, when: float | None) -> None:
        """Every call fails (``retry_at`` = ``when``) until the clock reaches ``when``."""
        self._down_until = when

    @property
    def in_flight(self) -> int:
        """Answers scheduled but not yet given (with ``delay``)."""
        self._pending = [call for call in self._pending if call.active()]
        return len(self._pending)

    # ICertificateIssuer

    def _failure(self, names: tuple[str, ...]) -> IssuerFailure | None:
        if self._down_until is not None and self._clock.seconds() < self._down_until:
            return IssuerFailure("the fake CA is down", retry_at=self._down_until)
        if self._fail_next:
            return self._fail_next.pop(0)
        for name in names:
            if name in self._broken:
                return IssuerFailure(f"{name}: {self._broken[name]}")
        return None

    def _answer(self, csr_pem: bytes, names: tuple[str, ...]) -> bytes:
        failure = self._failure(names)
        if failure is not None:
            raise failure
        csr = x509.load_pem_x509_csr(csr_pem)
        if not csr.is_signature_valid:
            raise IssuerFailure("the CSR's signature does not verify")
        try:
            asked = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            csr_names = {n.lower() for n in asked.get_values_for_type(x509.DNSName)}
        except x509.ExtensionNotFound:
            csr_names = set()
        if csr_names != {n.lower() for n in names}:
            raise IssuerFailure("the CSR's names differ from the names asked for")
        now = self.now().replace(microsecond=0)
        chain = self.ca.sign(csr.public_key(), names, now, now + self.lifetime)
        self.issued += 1
        return chain

    def issue(self, csr_pem: bytes, names: Sequence[str], options: Any = None) -> Deferred[Any]:
        """Sign at once, or after ``delay`` seconds on the clock."""
        wanted = tuple(names)
        self.issue_calls += 1
        self.requests.append(wanted)
        self.options.append(dict(options or {}))
        if self.delay <= 0:
            try:
                return succeed(self._answer(csr_pem, wanted))
            except Exception as exc:
                return fail(exc)
        call: IDelayedCall | None = None
        answer: Deferred[Any] = Deferred(lambda _d: call.cancel() if call and call.active()
                                         else None)

        def respond() -> None:
            try:
                answer.callback(self._answer(csr_pem, wanted))
            except Exception as exc:
                answer.errback(exc)

        call = self._clock.callLater(self.delay, respond)
        self._pending.append(call)
        return answer

    def abandon(self, names: Sequence[str]) -> Deferred[None]:
        """Counted; nothing else to forget. Idempotent."""
        self.abandon_calls += 1
        self.abandoned.append(tuple(names))
        return succeed(None)

    def renewal_window(self, not_before: datetime, not_after: datetime) -> Any:
        return None if self.window is None else self.window(not_before, not_after)
