"""The ``upstream`` of a proxy host: ``http(s)://host[:port]``, strictly.

Upstreams are typed by people and end up in outgoing connections, so the grammar is narrow:
scheme ``http`` or ``https``; a host that is an IPv4 address, a bracketed IPv6 address, or
an LDH hostname (single labels such as ``app`` or ``localhost`` are fine: container and
compose names); an optional port 1-65535; no user info, no query, no fragment; a path of at
most ``/``. Anything else is refused with a message saying which part is wrong.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

_URL = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<authority>[^/?#]*)(?P<rest>.*)\Z", re.DOTALL
)
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")


class InvalidUpstream(ValueError):
    """``str()`` is a message for the admin API's ``upstream`` field."""


@dataclass(frozen=True)
class Upstream:
    scheme: Literal["http", "https"]
    host: str  # IPv6 without brackets
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 80 if self.scheme == "http" else 443
        return f"{self.scheme}://{host}" + ("" if self.port == default else f":{self.port}")


def _host(text: str) -> str:
    if text.startswith("["):
        if not text.endswith("]"):
            raise InvalidUpstream("an IPv6 address must be written in brackets: [::1]")
        try:
            return str(ipaddress.IPv6Address(text[1:-1]))
        except ValueError:
            raise InvalidUpstream(f"{text} is not an IPv6 address") from None
    if re.fullmatch(r"[0-9.]+", text):
        try:
            return str(ipaddress.IPv4Address(text))
        except ValueError:
            raise InvalidUpstream(f"{text} is not an IPv4 address") from None
    host = text.lower().rstrip(".")
    labels = host.split(".")
    if not host or len(host) > 253 or not all(_LABEL.match(label) for label in labels):
        raise InvalidUpstream(
            "the upstream host must be an IP address or a hostname of letters, digits, "
            "hyphens and dots"
        )
    return host


def parse_upstream(text: str) -> Upstream:
    """@raise InvalidUpstream: naming what is wrong (never echoing control characters)."""
    if not text.isprintable() or " " in text:
        raise InvalidUpstream("the upstream URL must not contain spaces or control characters")
    match = _URL.match(text)
    if match is None:
        raise InvalidUpstream("the upstream must be a URL such as http://127.0.0.1:3000")
    scheme = match["scheme"].lower()
    if scheme not in ("http", "https"):
        raise InvalidUpstream("the upstream scheme must be http or https")
    if match["rest"] not in ("", "/"):
        raise InvalidUpstream(
            "the upstream must not have a path, query or fragment (only scheme, host, port)"
        )
    authority = match["authority"]
    if "@" in authority:
        raise InvalidUpstream("the upstream must not contain user information")
    port_text = None
    if authority.startswith("["):
        close = authority.find("]")
        host_text, remainder = authority[: close + 1], authority[close + 1 :]
        if remainder:
            if not remainder.startswith(":"):
                raise InvalidUpstream("unexpected text after the IPv6 address")
            port_text = remainder[1:]
    elif ":" in authority:
        host_text, port_text = authority.rsplit(":", 1)
    else:
        host_text = authority
    host = _host(host_text)
    default = 80 if scheme == "http" else 443
    if port_text is None:
        port = default
    elif not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise InvalidUpstream("the upstream port must be a number from 1 to 65535")
    else:
        port = int(port_text)
    return Upstream(scheme, host, port)  # type: ignore[arg-type]
