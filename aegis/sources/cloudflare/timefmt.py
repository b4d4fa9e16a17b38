"""Cloudflare's two ``expires_on`` spellings, parsed into aware UTC datetimes.

Why both: the published schema says RFC 3339 (``2041-03-23T00:00:00Z``), but the Origin CA
service answers with Go's ``time.Time.String()`` form (``2019-04-15 07:46:00 +0000 UTC``),
sometimes with fractional seconds. A client that trusts the schema breaks on real answers.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

from aegis.timefmt import to_text

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|z|[+-]\d{2}:\d{2})\Z"
)
_GO = re.compile(
    r"(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})(?:\.(\d+))? ([+-]\d{4})(?: [A-Za-z]{1,6})?\Z"
)


def parse_expires_on(text: object) -> datetime:
    """Parse either format. @raise ValueError: naming neither the value's secrets (it has none)
    nor more than the first 40 characters of it."""
    if not isinstance(text, str):
        raise ValueError("expires_on is not a string")
    value = text.strip()
    match = _RFC3339.match(value) or _GO.match(value)
    if match is None:
        raise ValueError(f"expires_on {value[:40]!r} is neither RFC 3339 nor Go time format")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, offset = match.group(7), match.group(8)
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    if offset in ("Z", "z"):
        tz = UTC
    else:
        digits = offset.replace(":", "")
        delta = timedelta(hours=int(digits[1:3]), minutes=int(digits[3:5]))
        tz = timezone(-delta if digits[0] == "-" else delta)
    moment = datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)
    return moment.astimezone(UTC)


format_rfc3339 = to_text  # ``2041-03-23T00:00:00Z``: the form the admin API answers with


def format_go(moment: datetime) -> str:
    """``2041-03-23 00:00:00 +0000 UTC``: Go's form, as the fake can send it."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S +0000 UTC")
