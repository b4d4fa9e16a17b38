"""twistd plugins: ``twistd -n aegis`` builds the service tree in :mod:`aegis.tap`;
``--reactor=aegis`` selects :mod:`aegis.reactor`, as ``aegis run`` does."""

from twisted.application.reactors import Reactor
from twisted.application.service import ServiceMaker

aegis = ServiceMaker(
    "Aegis",
    "aegis.tap",
    "TLS-terminating reverse proxy with certificate management",
    "aegis",
)

# ``twistd --reactor=aegis -n aegis``: the reactor ``aegis run`` uses (see aegis.reactor).
aegis_reactor = Reactor(
    "aegis",
    "aegis.reactor",
    "epoll with direct event dispatch and immediate TCP writes (Aegis's proxy path)",
)
