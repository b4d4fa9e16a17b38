"""``twistd aegis`` / ``aegis run``: command-line options and the whole object graph.

:func:`makeService` is the only place that knows every concrete class; everything else is
handed what it needs (reactor, store, settings) so it can be tested with fakes.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IReactorCore
from twisted.python import usage

from aegis.bootstrap import StartupError, Storage, open_storage
from aegis.config import SETTINGS, ConfigError, Settings
from aegis.listeners import GracefulListener
from aegis.proxy.plainhttp import plain_http_factory
from aegis.service import AegisService, OnStop
from aegis.store._runner import StoreThread


class Options(usage.Options):
    """Every setting of :data:`aegis.config.SETTINGS` as ``--option`` (env var in the help)."""

    synopsis = "[options]"
    longdesc = (
        "Run Aegis: HTTP and HTTPS listeners for the proxy hosts, and the admin API. "
        "Every option can also be given as the environment variable named in its help; "
        "the command line wins."
    )
    optParameters = [
        [spec.option, None, None, f"{spec.help} [env {spec.env}; default: "
         f"{'(none)' if spec.default is None else spec.default or '(empty)'}]"]
        for spec in SETTINGS
    ]

    def settings(self) -> Settings:
        """Validated settings. @raise ConfigError: naming the bad setting."""
        given = {spec.name: self[spec.option] for spec in SETTINGS}
        return Settings.load(given)


def exit_with_error(message: str) -> NoReturn:
    """One line on stderr, exit status 2: the contract for bad configuration."""
    sys.stderr.write(f"aegis: error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(2)


def makeService(options: Options, reactor: IReactorCore | None = None) -> AegisService:
    """Build the service tree. Blocking start-up work (database, key) happens here."""
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    assert reactor is not None
    try:
        settings = options.settings()
    except ConfigError as exc:
        exit_with_error(str(exc))
    store_thread = StoreThread(reactor)  # type: ignore[arg-type]
    try:
        storage = open_storage(settings, store_thread.runner())
    except StartupError as exc:
        exit_with_error(str(exc))
    return build_tree(settings, storage, store_thread, reactor)


def build_tree(
    settings: Settings, storage: Storage, store_thread: StoreThread, reactor: Any
) -> AegisService:
    root = AegisService(reactor)
    closer = OnStop(storage.close)
    closer.setName("store-close")
    closer.setServiceParent(root)
    store_thread.setName("store")
    store_thread.setServiceParent(root)

    http = GracefulListener(
        serverFromString(reactor, settings.http_listen),
        plain_http_factory(),
        reactor,
        settings.shutdown_timeout,
        "HTTP listener",
        root.fatal,
    )
    http.setName("http")
    http.setServiceParent(root)
    return root

