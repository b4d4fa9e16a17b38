"""Errors every store raises, whatever its backend. The admin API maps them to HTTP."""

from __future__ import annotations


class StoreError(Exception):
    """Base class. Messages never contain secrets or SQL."""


class StoreBusy(StoreError):
    """The database stayed locked past the busy timeout. Nothing changed; retry later (503)."""

    retry_after_seconds = 1


class StoreUnavailable(StoreBusy):
    """The database server cannot be reached (connection refused or lost, server shutting
    down); retry later (503). The transaction was not committed, except when the connection
    broke during COMMIT itself, where only reading back tells. A StoreBusy, so every caller
    that retries a busy store retries this too."""

    retry_after_seconds = 5


class StoreFull(StoreError):
    """The disk (or the database's size limit) is full. The transaction was rolled back,
    so every stored record is as it was before (507)."""


class NotFound(StoreError):
    """No record of that kind with that id (404)."""

    def __init__(self, kind: str, ident: object) -> None:
        super().__init__(f"no {kind} with id {ident}")
        self.kind = kind
        self.ident = ident


class Conflict(StoreError):
    """The change contradicts stored state (409): a name already taken, a record in use.

    ``field`` names the offending input field when there is one.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class SchemaTooNew(StoreError):
    """The database was written by a newer Aegis; refusing to touch it."""
