"""Where the admin token comes from (runs at start-up, before the reactor; blocking).

* ``AEGIS_ADMIN_TOKEN`` set: that token is the only one accepted; nothing is stored.
* unset: a token is read from ``<data dir>/admin-token`` if its SHA-256 matches the digest
  in the settings table; otherwise (first run, or the file was deleted to reset the
  token) a new ``secrets.token_urlsafe(32)`` is generated, written to that file (0600,
  atomically) and only its digest stored. The path is logged once, the token never.

A plain SHA-256 is enough for a generated token: it carries 256 random bits, so there is
nothing for a slow password hash to protect against. Tokens chosen by people come from
the environment and are never stored at all.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from twisted.logger import Logger

from aegis.admin._guards import TokenVerifier, token_digest
from aegis.config import Settings
from aegis.interfaces import IStore
from aegis.localca import write_file_atomically
from aegis.store.sqlite import ensure_private_directory

log = Logger()

TOKEN_DIGEST_SETTING = "admin_token_sha256"  # noqa: S105  # nosec B105 # a setting name
TOKEN_FILE = "admin-token"  # noqa: S105  # nosec B105 # a file name


def resolve_admin_token(settings: Settings, store: IStore) -> TokenVerifier:
    if settings.admin_token is not None:
        return TokenVerifier(token_digest(settings.admin_token))
    path = settings.data_dir / TOKEN_FILE
    stored = store.transact_blocking(lambda txn: txn.get_setting(TOKEN_DIGEST_SETTING))
    if stored is not None and _file_digest(path) == stored:
        return TokenVerifier(stored)
    token = secrets.token_urlsafe(32)
    ensure_private_directory(settings.data_dir)
    write_file_atomically(path, (token + "\n").encode("ascii"), 0o600)
    digest = token_digest(token)
    store.transact_blocking(lambda txn: txn.set_setting(TOKEN_DIGEST_SETTING, digest))
    log.warn(
        "AEGIS_ADMIN_TOKEN is not set: generated an admin API token and wrote it to "
        "{path} (mode 0600). Send it as `Authorization: Bearer <token>`. Delete the file "
        "and restart to replace it.",
        path=str(path),
    )
    return TokenVerifier(digest)


def _file_digest(path: Path) -> str | None:
    try:
        text = path.read_text("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return token_digest(text) if text else None
