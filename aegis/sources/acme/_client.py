"""The RFC 8555 operations Aegis needs, on top of :class:`AcmeTransport`.

``acme.messages`` parses what the server sends (orders, authorizations, challenges) so field
names and status values come from a maintained library; this module only sequences
requests. The account is found or registered lazily, and re-registered once when the
server says it no longer knows it (Pebble forgets every account on restart; a real CA may
deactivate one).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

from acme import challenges, messages
from josepy.b64 import b64decode, b64encode
from josepy.errors import DeserializationError
from josepy.jwk import JWKEC
from twisted.internet.defer import Deferred, DeferredLock
from twisted.logger import Logger

from aegis.sources.acme._transport import (
    AcmeError,
    AcmeProblem,
    AcmeResponse,
    AcmeTransport,
)
from aegis.sources.acme.eab import ExternalAccount
from aegis.sources.acme.profiles import offered_profiles

log = Logger()
T = TypeVar("T")


class AccountBook(Protocol):
    """Where the account URL for a directory is remembered (the settings table)."""

    def load_account_url(self, directory_url: str) -> Deferred[str | None]: ...

    def save_account_url(self, directory_url: str, url: str | None) -> Deferred[None]: ...


class AcmeClient:
    """One ACME account at one directory. Safe to share between concurrent orders."""

    def __init__(
        self,
        transport: AcmeTransport,
        key: JWKEC,
        directory_url: str,
        contact_email: str,
        accounts: AccountBook,
        external_account: ExternalAccount | None = None,
    ) -> None:
        self._eab = external_account
        # the account URL is remembered per directory, and per EAB kid when there is one
        self._scope = (directory_url if external_account is None
                       else external_account.account_scope(directory_url))
        self._transport = transport
        self._key = key
        self.directory_url = directory_url
        self._email = contact_email
        self._accounts = accounts
        self._directory: dict[str, Any] | None = None
        self._account_url: str | None = None
        self._lock = DeferredLock()

    async def directory(self) -> dict[str, Any]:
        if self._directory is None:
            response = await self._transport.get(self.directory_url)
            document = response.json()
            if not isinstance(document, dict) or "newOrder" not in document:
                raise AcmeError("the ACME directory is not an RFC 8555 directory")
            self._transport.new_nonce_url = str(document["newNonce"])
            self._directory = document
        return self._directory

    def key_authorization(self, token: str) -> str:
        """``token.thumbprint``: what HTTP-01 serves for ``token``."""
        return str(challenges.HTTP01(token=b64decode(token)).key_authorization(self._key))

    async def _register(self) -> str:
        directory = await self.directory()
        body: dict[str, Any] = {"termsOfServiceAgreed": True}
        if self._email:
            body["contact"] = [f"mailto:{self._email}"]
        if self._eab is not None:
            body["externalAccountBinding"] = self._eab.binding(
                self._key, str(directory["newAccount"]))
        try:
            response = await self._transport.post(str(directory["newAccount"]), body, None)
        except AcmeProblem as problem:
            if problem.code == "externalAccountRequired":
                raise AcmeError(
                    "the ACME CA requires external account binding: set AEGIS_ACME_EAB_KID "
                    "and AEGIS_ACME_EAB_HMAC_KEY to the key identifier and HMAC key it gave "
                    "you") from None
            if self._eab is not None and problem.code in ("unauthorized", "malformed"):
                raise AcmeError(
                    f"the ACME CA refused the external account binding of kid "
                    f"{self._eab.kid!r} ({problem.detail[:200]}): check AEGIS_ACME_EAB_KID "
                    "and AEGIS_ACME_EAB_HMAC_KEY") from None
            raise
        if response.location is None:
            raise AcmeError("newAccount answered without the account URL")
        await self._accounts.save_account_url(self._scope, response.location)
        log.info("acme_account_registered directory={directory}", directory=self.directory_url)
        return response.location

    async def account_url(self) -> str:
        """The account URL: remembered, or registered now (one registration at a time)."""
        if self._account_url is not None:
            return self._account_url
        await self._lock.acquire()
        try:
            if self._account_url is None:
                stored = await self._accounts.load_account_url(self._scope)
                self._account_url = stored if stored is not None else await self._register()
            return self._account_url
        finally:
            self._lock.release()

    async def signed(self, url: str, payload: Any) -> AcmeResponse:
        """POST ``payload`` (None: POST-as-GET) as our account; re-register once if lost."""
        await self.directory()  # the nonce URL, even when resuming an order after a restart
        kid = await self.account_url()
        try:
            return await self._transport.post(url, payload, kid)
        except AcmeProblem as problem:
            if problem.code not in ("accountDoesNotExist", "unauthorized") or (
                problem.code == "unauthorized" and "account" not in problem.detail.lower()
            ):
                raise
            log.warn("acme_account_lost directory={directory}; registering again",
                     directory=self.directory_url)
            if self._account_url == kid:
                self._account_url = None
                await self._accounts.save_account_url(self._scope, None)
            fresh = await self.account_url()
            return await self._transport.post(url, payload, fresh)

    @property
    def identity(self) -> str:
        """The CA and account this client speaks as: certificates record it."""
        suffix = "" if self._eab is None else f" eab:{self._eab.kid}"
        return f"acme {self.directory_url}{suffix}"

    async def profiles(self) -> dict[str, str] | None:
        """The directory's ``meta.profiles`` (name → description), None if it lists none."""
        return offered_profiles(await self.directory())

    def known_profiles(self) -> dict[str, str] | None:
        """``meta.profiles`` if the directory has been read (memory only), else None."""
        return offered_profiles(self._directory)

    async def renewal_info_url(self) -> str | None:
        """The directory's ``renewalInfo`` base (RFC 9773), or None when the CA has no ARI."""
        value = (await self.directory()).get("renewalInfo")
        return value if isinstance(value, str) and value else None

    async def renewal_info(self, certificate_id: str) -> tuple[Any, float | None] | None:
        """The CA's renewalInfo document for an ARI certificate identifier and its
        Retry-After (seconds); None when the directory lists no ``renewalInfo``. An
        unauthenticated GET (RFC 9773 §4.2), through the same request budget."""
        base = await self.renewal_info_url()
        if base is None:
            return None
        response = await self._transport.get(f"{base.rstrip('/')}/{certificate_id}")
        return response.json(), self._transport.retry_after(response)

    async def new_order(
        self, names: Sequence[str], replaces: str | None = None, profile: str | None = None,
    ) -> tuple[str, messages.Order]:
        """Create an order; ``replaces`` is the ARI identifier of the certificate it
        renews (RFC 9773 §5), ``profile`` the CA profile to issue under."""
        directory = await self.directory()
        payload: dict[str, Any] = {
            "identifiers": [{"type": "dns", "value": name} for name in names]}
        if replaces is not None:
            payload["replaces"] = replaces
        if profile is not None:
            payload["profile"] = profile
        response = await self.signed(str(directory["newOrder"]), payload)
        if response.location is None:
            raise AcmeError("newOrder answered without the order URL")
        return response.location, _parse(messages.Order, response)

    async def order(self, url: str) -> tuple[messages.Order, float | None]:
        """The order at ``url`` and the server's Retry-After hint (seconds), if any."""
        response = await self.signed(url, None)
        return _parse(messages.Order, response), _retry_after(response)

    async def authorization(self, url: str) -> tuple[messages.Authorization, float | None]:
        response = await self.signed(url, None)
        return _parse(messages.Authorization, response), _retry_after(response)

    async def answer(self, challenge_url: str) -> None:
        """Tell the server to validate: the payload is an empty JSON object."""
        await self.signed(challenge_url, {})

    async def finalize(self, finalize_url: str, csr_der: bytes) -> messages.Order:
        response = await self.signed(finalize_url, {"csr": b64encode(csr_der).decode()})
        order: messages.Order = _parse(messages.Order, response)
        return order

    async def download(self, certificate_url: str) -> bytes:
        """The PEM chain, leaf first (``application/pem-certificate-chain``)."""
        response = await self.signed(certificate_url, None)
        if b"-----BEGIN CERTIFICATE-----" not in response.body:
            raise AcmeError("the ACME server's certificate download is not a PEM chain")
        return response.body


def _parse(kind: type[T], response: AcmeResponse) -> T:
    """Parse a server object; a malformed one is an :class:`AcmeError`, not a crash."""
    try:
        return kind.from_json(response.json())  # type: ignore[attr-defined,no-any-return]
    except DeserializationError as exc:
        raise AcmeError(f"the ACME server sent a malformed {kind.__name__}: {exc}") from None


def _retry_after(response: AcmeResponse) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    return float(value) if value.isdigit() else None
