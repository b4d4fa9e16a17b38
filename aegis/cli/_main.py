"""The ``aegis`` command: ``run`` and the key tools here, the shell commands in sibling modules.

``aegis run`` builds the same service tree as ``twistd -n aegis`` and runs it in the
foreground with logs on stdout. It differs from twistd in one way operators rely on: after
SIGTERM or SIGINT it drains and exits 0 (twistd re-raises the signal instead).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)
from twisted.python import usage
from twisted.python.reflect import qual

from aegis import __version__
from aegis.cli._backup import BackupCommand
from aegis.cli._certs import CertsOptions, TrustBundle
from aegis.cli._command import (
    ClientCommand,
    LocalCommand,
    leaf,
    run_client_command,
    run_local_command,
)
from aegis.cli._export import ExportCommand, ImportCommand
from aegis.cli._hosts import HostsOptions
from aegis.cli._restore import RestoreCommand
from aegis.cli._status import Check, Status
from aegis.config import ConfigError, Settings
from aegis.crypto.keywrap import MasterKey, MasterKeyError
from aegis.crypto.masterkey import rotate_master_key

if TYPE_CHECKING:
    from aegis.tap import Options as RunOptions


def exit_with_error(message: str) -> NoReturn:
    from aegis.tap import exit_with_error as exit_

    exit_(message)


def _run_options() -> usage.Options:
    """``aegis run``'s options, imported only when chosen: the server's modules take a
    second to import, which every shell command would otherwise pay."""
    from aegis.tap import Options

    return Options()


class RotateKeyOptions(usage.Options):
    synopsis = "[--data-dir DIR]"
    longdesc = (
        "Re-encrypt every stored private key under a new master key, in one transaction. "
        "Stop Aegis first. The current key is AEGIS_SSL_KEY, or the one stored in the "
        "database. The new key is AEGIS_SSL_NEW_KEY (then start Aegis with AEGIS_SSL_KEY set "
        "to it; no copy is kept in the database), or, if that is unset, a generated key "
        "stored in the database."
    )
    optParameters = [
        ["data-dir", None, None, "Directory of aegis.db [env AEGIS_DATA_DIR; default: data]"],
    ]


class AegisOptions(usage.Options):
    synopsis = "COMMAND [options]"
    longdesc = "Aegis: TLS-terminating reverse proxy with certificate management."
    subCommands = [
        ["run", None, _run_options, "Run Aegis in the foreground (logs on stdout)."],
        ["rotate-key", None, RotateKeyOptions, "Re-encrypt stored keys under a new master key."],
        ["generate-key", None, usage.Options, "Print a new random master key (64 hex)."],
        ["version", None, usage.Options, "Print the version."],
        ["hosts", None, HostsOptions, "Proxy hosts: list, show, add, rm (admin API)."],
        ["certs", None, CertsOptions, "Certificates: list, show, import, rm, renew."],
        ["trust-bundle", None, TrustBundle, "Download the local CA trust bundle."],
        ["status", None, Status, "Health and what is failing."],
        ["check", None, Check, "Exit 0 OK, 1 warning, 2 critical (for monitoring)."],
        ["backup", None, BackupCommand, "Write a consistent backup of the database."],
        ["restore", None, RestoreCommand, "Restore a backup into a stopped instance."],
        ["export", None, ExportCommand, "Export hosts and certificates as JSON."],
        ["import", None, ImportCommand, "Import an export through the admin API."],
    ]

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("give a command, e.g. `aegis run`; see `aegis --help`")


def _start_logging() -> None:
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
    observer = FilteringLogObserver(textFileLogObserver(sys.stdout), [predicate])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


def run(options: RunOptions) -> int:
    from twisted.internet import reactor

    from aegis.tap import makeService

    _start_logging()
    Logger(namespace="aegis.cli").info("reactor: {reactor}", reactor=qual(type(reactor)))
    root = makeService(options, reactor)
    root.privilegedStartService()
    root.startService()
    reactor.addSystemEventTrigger(
        "before", "shutdown", root.stopService
    )
    reactor.run()
    return root.exit_status


def rotate_key(options: RotateKeyOptions) -> int:
    from aegis.bootstrap import StartupError, open_storage
    from aegis.store._runner import immediate_runner

    try:
        settings = Settings.load({"data_dir": options["data-dir"]})
        new_text = os.environ.get("AEGIS_SSL_NEW_KEY")
        new_key = MasterKey.from_hex(new_text) if new_text is not None else MasterKey.generate()
    except ConfigError as exc:
        exit_with_error(str(exc))
    except MasterKeyError as exc:
        exit_with_error(f"AEGIS_SSL_NEW_KEY: {exc}")
    if not settings.database_path.exists():
        exit_with_error(f"no database at {settings.database_path}")
    try:
        storage = open_storage(settings, immediate_runner)
    except StartupError as exc:
        exit_with_error(str(exc))
    try:
        old_key = storage.key.key
        count = storage.store.transact_blocking(
            lambda txn: rotate_master_key(txn, old_key, new_key, store_new_key=new_text is None)
        )
    finally:
        storage.close()
    print(f"re-encrypted {count} stored secret(s) under the new master key.")
    if new_text is None:
        print("the new master key is stored in the database settings table.")
    else:
        print("start Aegis with AEGIS_SSL_KEY set to the value of AEGIS_SSL_NEW_KEY; "
              "no copy is kept in the database.")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    options = AegisOptions()
    try:
        options.parseOptions(list(sys.argv[1:] if argv is None else argv))
    except usage.UsageError as exc:
        exit_with_error(f"{exc} (see `aegis --help`)")
    command, sub = options.subCommand, options.subOptions
    chosen = leaf(options)
    if isinstance(chosen, ClientCommand):
        return run_client_command(chosen)
    if isinstance(chosen, LocalCommand):
        return run_local_command(chosen)
    if command == "run":
        return run(sub)
    if command == "rotate-key":
        return rotate_key(sub)
    if command == "generate-key":
        print(MasterKey.generate().hex())
        return 0
    print(__version__)
    return 0
