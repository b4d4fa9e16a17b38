"""systemd's readiness protocol (``Type=notify``), without a dependency.

systemd passes a datagram socket in ``NOTIFY_SOCKET`` (a path, or ``@name`` for the
abstract namespace); the service sends newline-separated ``KEY=value`` states to it:
``READY=1`` once it listens, ``RELOADING=1`` and ``READY=1`` around a reload (SIGHUP),
``STOPPING=1`` when it begins to stop. Outside systemd the variable is unset and every call
does nothing. See sd_notify(3).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

from twisted.logger import Logger

log = Logger()


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` to systemd; True if sent, False without ``NOTIFY_SOCKET``. A failure to
    send is logged, never raised: systemd's bookkeeping must not stop the proxy."""
    address = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
    except OSError as exc:
        log.warn("cannot notify systemd ({state!r}): {error}", state=state, error=exc)
        return False
    return True


def reloading_state() -> str:
    """``RELOADING=1`` with the monotonic time systemd 253+ asks for (``Type=notify-reload``)."""
    return f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"
