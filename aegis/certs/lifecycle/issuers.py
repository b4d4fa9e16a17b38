"""Building every source's issuer from one context, so the assembly names no source.

A source's ``SourceSpec.issuer`` gets an :class:`IssuerContext`: the reactor (network), the
clock (schedule), the store, the key wrapper, the settings, the shared event publisher, and
:meth:`IssuerContext.pace` — the per-CA request budget its client must await before each
request. What a source needs beyond its issuer (ACME's HTTP-01 answers on port 80, a
service to stop on shutdown, something to load before the first attempt) it hands back
through :meth:`add_responder`, :meth:`add_service` and :meth:`add_preload`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.application.service import IService
from twisted.internet.defer import Deferred
from zope.interface import implementer
from zope.interface.verify import verifyObject

from aegis.certs import sources
from aegis.certs.lifecycle.budget import RequestBudget
from aegis.crypto.keywrap import KeyWrapper
from aegis.events import EventPublisher
from aegis.interfaces import ICertificateIssuer, IChallengeResponder, IStore


@dataclass
class IssuerContext:
    """What issuer factories get; see the module docstring."""

    reactor: Any
    clock: Any
    store: IStore
    wrapper: KeyWrapper
    settings: Any
    events: EventPublisher
    responders: list[IChallengeResponder] = field(default_factory=list)
    services: list[tuple[str, IService]] = field(default_factory=list)
    preloads: list[Callable[[], Deferred[None]]] = field(default_factory=list)
    budgets: dict[str, RequestBudget] = field(default_factory=dict)
    request_rate: float | None = None

    def pace(self, ca: str) -> Callable[[], Deferred[None]]:
        """The request budget of CA ``ca`` (one per CA, shared by every client of it)."""
        budget = self.budgets.get(ca)
        if budget is None:
            rate = self.request_rate
            budget = RequestBudget(self.clock) if rate is None else RequestBudget(
                self.clock, rate, max(1, int(rate)))
            self.budgets[ca] = budget
        return budget.take

    def add_responder(self, responder: IChallengeResponder) -> None:
        self.responders.append(responder)

    def add_service(self, name: str, service: IService) -> None:
        self.services.append((name, service))

    def add_preload(self, load: Callable[[], Deferred[None]]) -> None:
        self.preloads.append(load)


def build_issuers(context: IssuerContext) -> dict[str, ICertificateIssuer]:
    """Every registered source's issuer, by source name (sources without one left out)."""
    issuers: dict[str, ICertificateIssuer] = {}
    for spec in sources.all_sources():
        if spec.issuer is None:
            continue
        issuer = spec.issuer(context)
        if issuer is None:
            continue
        verifyObject(ICertificateIssuer, issuer)
        if issuer.source != spec.name:
            raise ValueError(f"the issuer of {spec.name} says it issues {issuer.source}")
        issuers[spec.name] = issuer
    return issuers


@implementer(IChallengeResponder)
class ChallengeResponders:
    """Every source's challenge answers as one :class:`IChallengeResponder` (port 80)."""

    def __init__(self, responders: list[IChallengeResponder]) -> None:
        self._responders = responders

    def key_authorization(self, token: str) -> bytes | None:
        for responder in self._responders:
            found = responder.key_authorization(token)
            if found is not None:
                return found
        return None

    def name_for(self, token: str) -> str | None:
        """The name an answer was published for, where its responder records one."""
        for responder in self._responders:
            if responder.key_authorization(token) is not None:
                name_for = getattr(responder, "name_for", None)
                return None if name_for is None else name_for(token)
        return None


__all__ = ["ChallengeResponders", "IssuerContext", "build_issuers"]
