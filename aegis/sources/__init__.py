"""Certificate sources: one module or package per source, each registering a
:class:`aegis.certs.sources.SourceSpec` when imported.

:data:`SOURCE_MODULES` is the one list of them: a new source is a new module here plus one
line in this tuple (see docs/lifecycle.md, "How a new source plugs in").
"""

SOURCE_MODULES: tuple[str, ...] = (
    "aegis.sources.custom",
    "aegis.sources.cloudflare",
    "aegis.sources.acme",
)
