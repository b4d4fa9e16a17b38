"""CPU time used by a benchmarked server, for rates per CPU second.

A shared VM's speed drifts, and servers loaded together (``--together``) need not get equal
shares of their CPU: a server that runs out of work sleeps and leaves its share to the
others. Dividing the work done by the CPU time the server really used gives a figure that
neither effect distorts.
"""

from __future__ import annotations

import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _own_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid``, its threads and its children (nginx's workers
    run in a child of the process we start)."""
    try:
        return _own_seconds(pid) + sum(cpu_seconds(child) for child in _children(pid))
    except (FileNotFoundError, ProcessLookupError):
        return 0.0


__all__ = ["cpu_seconds"]
