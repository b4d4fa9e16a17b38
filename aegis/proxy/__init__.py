"""Host routing, the plain-HTTP listener and the reverse proxy engine.

Public surface: :func:`proxy_factory` and :class:`ProxyEngine` (listeners), and the routing
boundary in :mod:`aegis.proxy.routing`. Everything else is private to the engine.
"""

from aegis.proxy._engine import ProxyEngine, proxy_factory

__all__ = ["ProxyEngine", "proxy_factory"]
