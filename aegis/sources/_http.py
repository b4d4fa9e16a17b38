"""The HTTP client plumbing the certificate sources share: one pooled Agent each."""

from __future__ import annotations

from typing import Any

from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer


@implementer(IPolicyForHTTPS)
class CachedTLSPolicy:
    """``policy``'s client TLS options, built once per (host, port).

    Twisted's ``Agent`` asks its policy on every request, even over a pooled connection,
    and building the options (trust roots, cipher selection, a new SSL context) costs
    about 0.2 ms each time. The options object is reusable: it makes a fresh
    ``SSL.Connection`` per connection from the one context.
    """

    def __init__(self, policy: IPolicyForHTTPS) -> None:
        self._policy = policy
        self._creators: dict[tuple[bytes, int], Any] = {}

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        key = (hostname, port)
        creator = self._creators.get(key)
        if creator is None:
            creator = self._creators[key] = self._policy.creatorForNetloc(hostname, port)
        return creator


def pooled_agent(
    reactor: Any, policy: IPolicyForHTTPS | None = None, **agent_options: Any
) -> tuple[Agent, HTTPConnectionPool]:
    """An ``Agent`` over its own persistent pool (4 connections per host), verifying TLS
    with ``policy`` (default: the system roots), and the pool, to tune and close."""
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 4
    agent = Agent(reactor, contextFactory=CachedTLSPolicy(policy or BrowserLikePolicyForHTTPS()),
                  pool=pool, **agent_options)
    return agent, pool
