"""Hostname lists for Cloudflare requests: :mod:`aegis.names` rules plus Cloudflare's limits.

Why a wrapper: the grammar (IDNA A-labels, a wildcard only as one leading ``*.`` over two or
more labels) is Aegis-wide and lives in :mod:`aegis.names`; Cloudflare adds list limits
(1-100 Origin CA names, at most 50 pack hosts). Every name is checked *before* a key is
generated or a request sent, and the names we later verify in the returned certificate are
exactly the normalised ones we sent.
"""

from __future__ import annotations

from collections.abc import Sequence

from aegis import names

HostnameError = names.InvalidHostname


def normalise_hostname(name: str) -> str:
    """The canonical spelling. @raise HostnameError: if it breaks :mod:`aegis.names` rules."""
    return names.normalise(name)


def normalise_hostnames(
    values: object, *, minimum: int = 1, maximum: int = 100
) -> tuple[str, ...]:
    """Validate a JSON list of names; duplicates (after normalisation) are refused.

    @raise HostnameError: naming the first bad entry or the count rule broken.
    """
    if not isinstance(values, Sequence) or isinstance(values, str | bytes):
        raise HostnameError("must be a list of hostnames")
    if not minimum <= len(values) <= maximum:
        raise HostnameError(f"must hold between {minimum} and {maximum} hostnames")
    seen: list[str] = []
    for raw in values:
        if not isinstance(raw, str):
            raise HostnameError("every entry must be a string")
        name = names.normalise(raw)
        if name in seen:
            raise HostnameError(f"{names.for_log(name)} is listed twice")
        seen.append(name)
    return tuple(seen)
