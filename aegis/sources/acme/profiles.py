"""ACME profiles (Let's Encrypt's ``classic``, ``tlsserver``, ``shortlived``): which one an
order asks for.

A CA lists the profiles it offers in its directory's ``meta.profiles`` (name → description);
a newOrder names one in ``profile``. Aegis takes the host's ``acme_profile`` (kept in the
host's ``extra``), else ``AEGIS_ACME_PROFILE``, else none (the CA's default). It is read
again at every order, so renewals keep it, and a change applies from the next renewal.

* A CA that lists no profiles gets no ``profile`` field (asking one that does not support
  them could fail every order), and the order proceeds with its default.
* A CA that lists profiles but not the one asked for fails the attempt with a message
  naming those it offers: issuing under another profile than the operator chose (6-day
  instead of 90-day, or the reverse) would be a surprise.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from aegis.store.records import HostRecord

PROFILE_KEY = "acme_profile"  # in a host's ``extra``
KNOWN_PROFILES = ("classic", "tlsserver", "shortlived")  # Let's Encrypt's, 2025
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class ProfileError(ValueError):
    """A profile name is malformed, or the CA does not offer it."""


def parse_profile(value: str) -> str:
    """A profile name as a CA spells it: lower case letters, digits, ``.``, ``_``, ``-``."""
    if not _NAME.match(value):
        raise ProfileError("an ACME profile name is 1-64 lower-case letters, digits, '.', "
                           "'_' or '-' (e.g. " + ", ".join(KNOWN_PROFILES) + ")")
    return value


def offered_profiles(directory: Mapping[str, Any] | None) -> dict[str, str] | None:
    """``meta.profiles`` of a directory; None when it lists none (or is not loaded)."""
    if directory is None:
        return None
    meta = directory.get("meta")
    profiles = meta.get("profiles") if isinstance(meta, dict) else None
    if not isinstance(profiles, dict) or not profiles:
        return None
    return {str(name): str(text) for name, text in profiles.items()}


def check_offered(profile: str, offered: Mapping[str, str] | None) -> None:
    """Raise :class:`ProfileError` if the CA lists profiles and ``profile`` is not one."""
    if offered is not None and profile not in offered:
        raise ProfileError(f"the ACME CA does not offer the profile {profile!r} "
                           f"(it offers {', '.join(sorted(offered))})")


def host_profile(host: HostRecord) -> str | None:
    value = host.extra.get(PROFILE_KEY)
    return value if isinstance(value, str) and value else None


def profile_for(hosts: Iterable[HostRecord], names: Iterable[str], default: str) -> str | None:
    """The profile for an order of ``names``: that of the host answering the first name,
    else ``default`` (empty: none)."""
    wanted = set(names)
    for host in hosts:
        if wanted & set(host.names):
            chosen = host_profile(host)
            if chosen is not None:
                return chosen
            break
    return default or None


__all__ = ["KNOWN_PROFILES", "PROFILE_KEY", "ProfileError", "check_offered", "host_profile",
           "offered_profiles", "parse_profile", "profile_for"]
