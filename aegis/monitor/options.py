"""Parsers of the monitoring settings (``AEGIS_MONITOR_*``, ``AEGIS_ALERT_*``,
``AEGIS_METRICS_LISTEN``), kept beside the feature; :mod:`aegis.config` lists the rows.

Each raises ``ValueError`` with a message :mod:`aegis.config` puts after the setting's
name. Only the standard library here: the settings table is imported before anything else.
"""

from __future__ import annotations

import re
from collections.abc import Callable

SMTP_SECURITY = ("starttls", "tls", "none")


def number(value: str, *, lowest: float = 0.0, most: float = 1e9, what: str = "a number",
           inclusive: bool = False) -> float:
    try:
        parsed = float(value)
    except ValueError:
        raise ValueError(f"must be {what}") from None
    above = parsed >= lowest if inclusive else parsed > lowest
    if not above or parsed > most:
        low = f"at least {lowest:g}" if inclusive else f"more than {lowest:g}"
        raise ValueError(f"must be {what}, {low} and at most {most:g}")
    return parsed


def days(value: str) -> float:
    return number(value, most=36500, what="a number of days")


def fraction(value: str) -> float:
    """A share of the lifetime: ``0.25`` or ``1/3``."""
    what = "a fraction of the lifetime such as 0.25 or 1/3"
    top, slash, bottom = value.partition("/")
    if slash:
        if not top.strip().isdigit() or not bottom.strip().isdigit() or int(bottom) == 0:
            raise ValueError(f"must be {what}")
        value = repr(int(top) / int(bottom))
    return number(value, most=1.0, what=what)


def seconds(value: str) -> float:
    return number(value, most=30 * 86400, what="a number of seconds")


def count(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 1000:
        raise ValueError("must be a whole number from 1 to 1000")
    return int(value)


def _listed(value: str, check: Callable[[str], str]) -> tuple[str, ...]:
    items = tuple(item.strip() for item in value.split(",") if item.strip())
    return tuple(check(item) for item in items)


def _url(item: str) -> str:
    if not re.fullmatch(r"https?://[^\s/@]+(:\d+)?(/\S*)?", item):
        raise ValueError("must be comma-separated http(s) URLs")
    return item


def urls(value: str) -> tuple[str, ...]:
    """Comma-separated http(s) URLs (empty: no webhook)."""
    return _listed(value, _url)


def _address(item: str) -> str:
    if not re.fullmatch(r"[^@\s,;<>]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}", item):
        raise ValueError("must be comma-separated e-mail addresses")
    return item


def addresses(value: str) -> tuple[str, ...]:
    return _listed(value, _address)


def address(value: str) -> str:
    return _address(value) if value else ""


def host(value: str) -> str:
    if value and not re.fullmatch(r"[A-Za-z0-9.:-]{1,253}", value):
        raise ValueError("must be empty (no mail) or a host name or address")
    return value


def port(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise ValueError("must be a port 1-65535")
    return int(value)


def security(value: str) -> str:
    if value not in SMTP_SECURITY:
        raise ValueError("must be starttls, tls or none")
    return value


def secret(value: str) -> str:
    if not value or not re.fullmatch(r"[\x20-\x7e]+", value):
        raise ValueError("must be printable characters")
    return value


def username(value: str) -> str:
    if value and not re.fullmatch(r"[\x21-\x7e]{1,256}", value):
        raise ValueError("must be printable characters without spaces")
    return value


__all__ = [
    "SMTP_SECURITY",
    "address",
    "addresses",
    "count",
    "days",
    "endpoint_or_off",
    "fraction",
    "host",
    "number",
    "port",
    "seconds",
    "secret",
    "security",
    "urls",
    "username",
]


def endpoint_or_off(value: str) -> str:
    """Empty (off) or a Twisted server endpoint description (checked by aegis.config)."""
    if not value:
        return ""
    from aegis.config import _parse_endpoint

    return _parse_endpoint(value)
