"""twistd plugin: ``twistd -n aegis`` builds the service tree in :mod:`aegis.tap`."""

from twisted.application.service import ServiceMaker

aegis = ServiceMaker(
    "Aegis",
    "aegis.tap",
    "TLS-terminating reverse proxy with certificate management",
    "aegis",
)
