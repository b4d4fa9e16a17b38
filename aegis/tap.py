"""``twistd aegis`` / ``aegis run``: command-line options and :func:`makeService`.

``makeService`` validates settings, does the blocking start-up work (:mod:`aegis.bootstrap`)
and hands everything to :func:`aegis.assembly.build_tree`, the one place that knows every
concrete class; everything else is handed what it needs (reactor, store, settings) so it can
be tested with fakes.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any, NoReturn

from twisted.internet.interfaces import IReactorCore
from twisted.python import usage

from aegis.assembly import build_tree
from aegis.bootstrap import StartupError, open_storage, prepare_local_ca
from aegis.config import SETTINGS, ConfigError, Settings
from aegis.service import AegisService
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
    assert reactor is not None  # nosec B101 # narrows a type
    try:
        settings = options.settings()
    except ConfigError as exc:
        exit_with_error(str(exc))
    store_thread = StoreThread(reactor)  # type: ignore[arg-type]
    try:
        storage = open_storage(settings, store_thread.runner())
    except StartupError as exc:
        exit_with_error(str(exc))
    try:
        local = prepare_local_ca(settings, storage.store, _now(reactor))
    except StartupError as exc:
        storage.close()
        exit_with_error(str(exc))
    return build_tree(settings, storage, store_thread, reactor, local)


def _now(reactor: Any) -> datetime:
    return datetime.fromtimestamp(reactor.seconds(), tz=UTC)
