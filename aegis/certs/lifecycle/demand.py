"""Which name sets Aegis should manage right now: the engine's input, computed from hosts.

The default rule (ACME's): every name of a host whose ``ssl_mode`` is a source's
``host_mode`` gets a one-name certificate of that source, except

* wildcard names, when the source cannot issue them (HTTP-01);
* names another certificate already serves by domain match — the spec's order puts an
  uploaded or Cloudflare Origin certificate first, so an ACME order for such a name would
  never be served (it is wanted again once that certificate is within a week of expiry
  or gone, so the ACME one is ready in time).

A source may add its own rule (``SourceSpec.demand``), e.g. stored certificates marked for
automatic renewal. Whatever is not demanded any more is retired by the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

from aegis.certs import sources
from aegis.names import is_wildcard, matches
from aegis.store.records import CertificateRecord, HostRecord

COVERAGE_MARGIN = timedelta(days=7)


@dataclass(frozen=True)
class Demand:
    """One name set to keep a certificate for: ``key`` identifies it in the store.

    ``certificate_id``: an existing certificate to renew in place (None: the engine adds
    one and replaces it in place on renewal). ``options``: source-specific public facts
    for its issuer (e.g. ``key_kind``).
    """

    key: str
    names: tuple[str, ...]
    source: str
    certificate_id: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(self.names))
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))


@dataclass(frozen=True)
class DemandInputs:
    """What a demand rule may look at. ``covered(name)``: another source's certificate
    serves ``name`` by domain match for at least :data:`COVERAGE_MARGIN` more."""

    hosts: Sequence[HostRecord]
    certificates: Sequence[CertificateRecord]
    now: datetime
    covered: Callable[[str], bool]


def host_mode_demand(spec: sources.SourceSpec, inputs: DemandInputs) -> Iterable[Demand]:
    """The default rule: one certificate per name of the hosts in ``spec.host_mode``."""
    if spec.host_mode is None:
        return
    for host in inputs.hosts:
        if host.ssl_mode != spec.host_mode:
            continue
        for name in host.names:
            if is_wildcard(name) and not spec.wildcards:
                continue
            if inputs.covered(name):
                continue
            yield Demand(key=name, names=(name,), source=spec.name)


def demanded(inputs: DemandInputs) -> dict[str, Demand]:
    """Every demanded set by key, over every registered source with an issuer. A key
    claimed twice keeps its first claim (registration order)."""
    found: dict[str, Demand] = {}
    for spec in sources.all_sources():
        if spec.issuer is None:
            continue
        found_here = (spec.demand(inputs) if spec.demand is not None
                      else host_mode_demand(spec, inputs))
        for demand in found_here:
            found.setdefault(demand.key, demand)
    return found


def coverage(
    certificates: Sequence[CertificateRecord], now: datetime,
    margin: timedelta = COVERAGE_MARGIN,
) -> Callable[[str], bool]:
    """A ``covered`` function over stored certificates served by domain match."""

    served = sources.by_step(sources.DOMAIN_MATCH)
    usable = [c for c in certificates
              if c.source in served and c.not_before <= now and c.not_after - now > margin]

    def covered(name: str) -> bool:
        return any(matches(pattern, name) for c in usable for pattern in c.domains)

    return covered


__all__ = ["COVERAGE_MARGIN", "Demand", "DemandInputs", "coverage", "demanded",
           "host_mode_demand"]
