"""The root service's readiness: the log line tests and operators wait for, and the heap
freeze that keeps full garbage collections short once the proxy serves."""

from __future__ import annotations

import gc
from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import globalLogPublisher

from aegis.service import AegisService


def test_ready_freezes_the_startup_heap_and_says_so() -> None:
    reactor = MemoryReactorClock()
    root = AegisService(reactor)
    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    gc.unfreeze()
    try:
        root.startService()
        assert gc.get_freeze_count() == 0  # not before the reactor runs
        reactor.run()
        assert gc.get_freeze_count() > 1000
        assert any(e.get("log_format") == "Aegis is ready" for e in seen)
    finally:
        gc.unfreeze()
        globalLogPublisher.removeObserver(seen.append)
        root.stopService()


def test_a_fatal_start_neither_freezes_nor_claims_readiness() -> None:
    reactor = MemoryReactorClock()
    root = AegisService(reactor)
    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    gc.unfreeze()
    try:
        root.startService()
        root.fatal("the HTTPS port is taken")
        reactor.run()
        assert gc.get_freeze_count() == 0
        assert root.exit_status == 1
        assert not any(e.get("log_format") == "Aegis is ready" for e in seen)
    finally:
        gc.unfreeze()
        globalLogPublisher.removeObserver(seen.append)
        root.stopService()
