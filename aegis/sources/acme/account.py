"""The ACME account: its key (sealed in the settings table) and its URL per directory.

The account key is ECDSA P-256 (ES256: small signatures, supported by every CA), generated
once and sealed with the master key under the setting name ``acme_account_key``, which
:data:`aegis.crypto.masterkey.SEALED_SETTINGS` lists so ``aegis rotate-key`` re-seals it. The
account URL is public and kept per directory (``acme_account_url:<directory URL>``) so a
switch between staging and production registers at each once and never mixes them.

Also here: the treq client that trusts ``AEGIS_ACME_CA_BUNDLE`` (a private CA, Pebble) in
place of the system roots when one is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import treq
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.jwk import JWKEC
from twisted.internet.defer import Deferred
from twisted.internet.ssl import Certificate, optionsForClientTLS, trustRootFromCertificates
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from aegis.crypto.keys import load_private_key_pem, private_key_pem
from aegis.crypto.keywrap import KeyWrapper
from aegis.crypto.sealed import open_setting, seal_setting
from aegis.interfaces import IStore, IStoreTransaction
from aegis.sources._http import pooled_agent

ACCOUNT_KEY_SETTING = "acme_account_key"


def account_url_setting(directory_url: str) -> str:
    return f"acme_account_url:{directory_url}"


def load_or_create_account_key(txn: IStoreTransaction, wrapper: KeyWrapper) -> JWKEC:
    """The account key, generated and sealed on first use (inside the caller's transaction)."""
    sealed = txn.get_setting(ACCOUNT_KEY_SETTING)
    if sealed is None:
        key = ec.generate_private_key(ec.SECP256R1())
        txn.set_setting(ACCOUNT_KEY_SETTING,
                        seal_setting(wrapper, ACCOUNT_KEY_SETTING, private_key_pem(key)))
    else:
        loaded = load_private_key_pem(open_setting(wrapper, ACCOUNT_KEY_SETTING, sealed))
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ValueError("the stored ACME account key is not an ECDSA key")
        key = loaded
    return JWKEC(key=key)


class StoreAccountBook:
    """:class:`aegis.sources.acme._client.AccountBook` over the settings table."""

    def __init__(self, store: IStore) -> None:
        self._store = store

    def load_account_url(self, directory_url: str) -> Deferred[str | None]:
        name = account_url_setting(directory_url)
        return self._store.transact(lambda txn: txn.get_setting(name))

    def save_account_url(self, directory_url: str, url: str | None) -> Deferred[None]:
        name = account_url_setting(directory_url)

        def work(txn: IStoreTransaction) -> None:
            if url is None:
                txn.delete_setting(name)
            else:
                txn.set_setting(name, url)

        return self._store.transact(work)


@implementer(IPolicyForHTTPS)
class _BundlePolicy:
    """Verify the ACME server against the certificates of one PEM bundle only."""

    def __init__(self, certificates: list[Certificate]) -> None:
        self._root = trustRootFromCertificates(certificates)

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        return optionsForClientTLS(hostname.decode("ascii"), trustRoot=self._root)


def read_ca_bundle(path: Path) -> list[Certificate]:
    """Every certificate of a PEM bundle (blocking: call at start-up)."""
    loaded = x509.load_pem_x509_certificates(path.read_bytes())
    return [
        Certificate.loadPEM(cert.public_bytes(serialization.Encoding.PEM)) for cert in loaded
    ]


def acme_http_client(reactor: Any, ca_bundle: list[Certificate] | None = None) -> Any:
    """A treq ``HTTPClient`` with its own persistent pool; ``ca_bundle`` replaces the system
    roots (build it with :func:`read_ca_bundle`)."""
    agent, pool = pooled_agent(reactor, None if ca_bundle is None else _BundlePolicy(ca_bundle))
    pool.retryAutomatically = False
    return treq.client.HTTPClient(agent)
