"""Certificate sources: one package per source (``acme``, ``cloudflare``), each behind
:class:`aegis.interfaces.ICertificateIssuer` so the registry and TLS layer never learn which."""
