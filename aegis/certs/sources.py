"""The source registry: which certificate sources exist and what each one does.

Why a registry: a certificate's ``source`` decides which step of the SNI order may serve it,
whether Aegis renews it, whether an upload may replace it, and which ``ssl_mode`` of a host
asks for it. Those facts used to be spelled out in a dozen places; now each source states
them once, in its own module, with :func:`register`, and everything else asks here. Outside
a source's own module and this registry no code names a source (a test counts it).

A source module registers a :class:`SourceSpec` when it is imported; the modules are listed
once, in :data:`aegis.sources.SOURCE_MODULES` (the "registration line" of a new source), and
imported by :func:`load_sources`. See docs/lifecycle.md for a worked example.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aegis.certs.lifecycle.demand import Demand, DemandInputs
    from aegis.certs.lifecycle.issuers import IssuerContext
    from aegis.interfaces import ICertificateIssuer

# The SNI selection steps a stored certificate can be served by (spec order 2 and 3).
DOMAIN_MATCH = "domain_match"  # any SNI its SANs cover
AUTOCERT = "autocert"  # only names of hosts whose ssl_mode is the source's ``host_mode``

# Host ssl_modes that belong to no source: no TLS certificate of the host's own, and
# "bring a certificate" (bound by ssl_cert_id or inline PEM).
MODE_NONE = "none"
MODE_BOUND = "custom"


@dataclass(frozen=True)
class SourceSpec:
    """What one certificate source is, as the rest of Aegis needs to know it.

    * ``name``: the certificate object's ``source`` value.
    * ``label``: how people call it ("Let's Encrypt").
    * ``selection_step``: :data:`DOMAIN_MATCH` or :data:`AUTOCERT`.
    * ``host_mode``: the host ``ssl_mode`` that asks the lifecycle engine to obtain this
      source's certificates for the host's names (None: hosts never ask for it).
    * ``renews_itself``: Aegis renews its certificates by default (True for ACME). A source
      with an issuer but ``renews_itself`` False renews only certificates marked so.
    * ``replaceable``: ``PUT /api/v1/certificates/{id}`` may replace one by upload.
    * ``uploads``: ``POST /api/v1/certificates`` stores certificates of this source.
    * ``wildcards``: its issuer can issue ``*.`` names (HTTP-01 ACME cannot).
    * ``issuer``: builds the :class:`ICertificateIssuer` (None: nothing to issue with).
    * ``demand``: which name sets this source wants managed, from hosts and certificates
      (None: the default rule for ``host_mode`` hosts, one certificate per name).
    * ``renewal_note``: how a certificate of this source is renewed, in words for errors.
    """

    name: str
    label: str
    selection_step: str
    host_mode: str | None = None
    renews_itself: bool = False
    replaceable: bool = False
    uploads: bool = False
    wildcards: bool = True
    issuer: Callable[[IssuerContext], ICertificateIssuer | None] | None = None
    demand: Callable[[DemandInputs], Iterable[Demand]] | None = None
    renewal_note: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.selection_step not in (DOMAIN_MATCH, AUTOCERT):
            raise ValueError(f"unknown selection step {self.selection_step!r}")
        if self.host_mode in (MODE_NONE, MODE_BOUND):
            raise ValueError(f"ssl_mode {self.host_mode!r} is not a source's mode")


_SOURCES: dict[str, SourceSpec] = {}


class UnknownSource(ValueError):
    """A ``source`` value no registered source has."""


def register(spec: SourceSpec) -> SourceSpec:
    """Add ``spec`` (idempotent for the same spec; another spec under a taken name fails)."""
    existing = _SOURCES.get(spec.name)
    if existing is not None and existing != spec:
        raise ValueError(f"certificate source {spec.name!r} is registered twice")
    if spec.host_mode is not None:
        for other in _SOURCES.values():
            if other.name != spec.name and other.host_mode == spec.host_mode:
                raise ValueError(f"ssl_mode {spec.host_mode!r} already belongs to {other.name}")
    _SOURCES[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a source (tests that register a throwaway one)."""
    _SOURCES.pop(name, None)


def load_sources() -> None:
    """Import every module of :data:`aegis.sources.SOURCE_MODULES` (each registers itself)."""
    from aegis.sources import SOURCE_MODULES

    for module in SOURCE_MODULES:
        importlib.import_module(module)


_LOADING: list[bool] = []  # non-empty once load_sources has been started


def _loaded() -> dict[str, SourceSpec]:
    # Not "if empty": importing one source module (a test, a tool) registers that source
    # alone, and the others must still be loaded before the first question.
    if not _LOADING:
        _LOADING.append(True)  # first: a source module asking here must not recurse
        load_sources()
    return _SOURCES


def get(name: str) -> SourceSpec:
    """The spec of source ``name``; :class:`UnknownSource` if there is none."""
    spec = _loaded().get(name)
    if spec is None:
        raise UnknownSource(f"unknown certificate source {name!r}")
    return spec


def known(name: str) -> bool:
    return name in _loaded()


def all_sources() -> tuple[SourceSpec, ...]:
    """Every registered source, in registration order."""
    return tuple(_loaded().values())


def names() -> tuple[str, ...]:
    return tuple(_loaded())


def by_step(step: str) -> frozenset[str]:
    """The source names served at SNI selection step ``step``."""
    return frozenset(s.name for s in _loaded().values() if s.selection_step == step)


def for_mode(mode: str) -> SourceSpec | None:
    """The source a host ``ssl_mode`` asks for (None for ``none`` and ``custom``)."""
    for spec in _loaded().values():
        if spec.host_mode == mode:
            return spec
    return None


def ssl_modes() -> tuple[str, ...]:
    """Every valid host ``ssl_mode``: ``none``, each source's mode, and ``custom``."""
    automatic = tuple(s.host_mode for s in _loaded().values() if s.host_mode is not None)
    return (MODE_NONE, *automatic, MODE_BOUND)


def upload_source() -> SourceSpec:
    """The source uploads are stored as (exactly one source says ``uploads``)."""
    found = [s for s in _loaded().values() if s.uploads]
    if len(found) != 1:
        raise LookupError("exactly one certificate source must take uploads")
    return found[0]


__all__ = [
    "AUTOCERT",
    "DOMAIN_MATCH",
    "MODE_BOUND",
    "MODE_NONE",
    "SourceSpec",
    "UnknownSource",
    "all_sources",
    "by_step",
    "for_mode",
    "get",
    "known",
    "load_sources",
    "names",
    "register",
    "ssl_modes",
    "unregister",
    "upload_source",
]
