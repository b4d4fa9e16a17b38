"""Names of the contexts (GCM associated data) secrets are sealed under.

One function per kind of secret, so writer and reader cannot disagree on the binding.
"""

from __future__ import annotations

import base64

from aegis.crypto.keywrap import KeyWrapper


def certificate_key_context(uid: str) -> str:
    """The private key of certificate ``uid``: binds the blob to that certificate row."""
    return f"certificate:{uid}:key"


# The ``extra`` entry of a certificate holding the credentials its source renews it with
# (base64 of a blob sealed under :func:`certificate_credentials_context`). The only sealed
# value ``extra`` may hold: views never show ``extra``, ``aegis rotate-key`` re-seals it, and
# it goes with the certificate row when that is deleted.
SEALED_CREDENTIALS = "credentials_sealed"


def certificate_credentials_context(uid: str) -> str:
    """The renewal credentials of certificate ``uid`` (e.g. a Cloudflare API token)."""
    return f"certificate:{uid}:credentials"


def seal_credentials(wrapper: KeyWrapper, uid: str, plaintext: bytes) -> str:
    return base64.b64encode(
        wrapper.seal(plaintext, certificate_credentials_context(uid))).decode("ascii")


def open_credentials(wrapper: KeyWrapper, uid: str, value: str) -> bytes:
    return wrapper.open(base64.b64decode(value), certificate_credentials_context(uid))


def pending_order_key_context(name: str) -> str:
    """The certificate key of an ACME order in flight for ``name`` (IssuanceState)."""
    return f"acme-order:{name}:key"


def setting_context(name: str) -> str:
    """A sealed value kept in the ``settings`` table under ``name``."""
    return f"setting:{name}"


def seal_setting(wrapper: KeyWrapper, name: str, plaintext: bytes) -> str:
    return base64.b64encode(wrapper.seal(plaintext, setting_context(name))).decode("ascii")


def open_setting(wrapper: KeyWrapper, name: str, value: str) -> bytes:
    return wrapper.open(base64.b64decode(value), setting_context(name))
