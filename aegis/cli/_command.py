"""The shape of a shell command that talks to the server, and how it is run.

A command is a :class:`ClientCommand` (its options, parsed by ``twisted.python.usage``) with
an ``execute(client)`` method returning the exit status. :func:`run_client_command` builds
the client from the options and turns every :class:`CommandFailed` into one line on stderr
and its exit status: a person never sees a traceback, a script gets a non-zero status.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, ClassVar

from twisted.python import usage

from aegis.cli import _output as output
from aegis.cli._client import AdminClient, CommandFailed, Target


class Arguments(usage.Options):
    """Positional arguments by name: ``arguments`` lists them, they land in ``self[name]``;
    one named ``id`` must be a positive number (``id_of`` says whose, for the message)."""

    arguments: ClassVar[tuple[str, ...]] = ()
    id_of: ClassVar[str] = "the id"

    def parseArgs(self, *args: str) -> None:
        if len(args) != len(self.arguments):
            wanted = " ".join(name.upper().replace("-", "_") for name in self.arguments)
            raise usage.UsageError(f"expected {wanted or 'no arguments'}")
        for name, value in zip(self.arguments, args, strict=True):
            self[name] = positive_id(value, self.id_of) if name == "id" else value

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """Options may follow the arguments (``aegis hosts add a.example http://x --alias
        www.a.example``): getopt stops at the first argument, so move them in front."""
        super().parseOptions(options_first(self, list(options or [])))


class ClientOptions(Arguments):
    """Options every command that talks to the server shares."""

    optFlags = [["json", None, "Print JSON for scripts instead of a table."]]
    optParameters = [
        ["admin-url", None, None, "Admin API base URL [env AEGIS_ADMIN_URL; default: from "
         "AEGIS_ADMIN_LISTEN, else https://127.0.0.1:9443]"],
        ["token-file", None, None, "File holding the admin token [default: env "
         "AEGIS_ADMIN_TOKEN, else <data dir>/admin-token]"],
        ["ca-file", None, None, "CA certificate that signs the admin listener's certificate "
         "[default: <ssl cache dir>/aegis-local-ca.crt]"],
        ["data-dir", None, None, "Data directory [env AEGIS_DATA_DIR; default: data]"],
        ["ssl-cache-dir", None, None,
         "SSL cache directory [env AEGIS_SSL_CACHE_DIR; default: .cache/ssl]"],
    ]


def options_first(parser: usage.Options, argv: list[str]) -> list[str]:
    """``argv`` with every option (and its value) before the plain arguments."""
    takes_value = {f"--{name[:-1]}" for name in parser.longOpt if name.endswith("=")}
    short = parser.shortOpt
    short_values = {f"-{letter}" for index, letter in enumerate(short)
                    if letter != ":" and short[index + 1:index + 2] == ":"}
    flags: list[str] = []
    plain: list[str] = []
    index = 0
    while index < len(argv):
        word = argv[index]
        if word == "--":
            plain.extend(argv[index + 1:])
            break
        if word.startswith("-") and word != "-":
            flags.append(word)
            if (word in takes_value or word in short_values) and index + 1 < len(argv):
                flags.append(argv[index + 1])
                index += 1
        else:
            plain.append(word)
        index += 1
    return [*flags, "--", *plain] if plain else flags


class ClientCommand(ClientOptions):
    """Options of one command that talks to the server; subclasses implement
    :meth:`execute`."""

    def execute(self, client: AdminClient) -> int:
        raise NotImplementedError(type(self).__name__)

    def failed(self, error: CommandFailed) -> int:
        """Report ``error`` (one line on stderr) and return the exit status."""
        error_line(str(error))
        return error.status

    @property
    def as_json(self) -> bool:
        return bool(self["json"])


class ListCommand(ClientCommand):
    """``list``: GET ``collection``, a table of ``columns`` or the API's JSON."""

    synopsis = "[--json]"
    collection: ClassVar[str] = ""
    columns: ClassVar[list[output.Column]] = []
    empty: ClassVar[str] = "(none)"

    def execute(self, client: AdminClient) -> int:
        items = client.call("GET", self.collection)
        if self.as_json:
            output.print_json(items)
        else:
            output.table(items, self.columns, empty=self.empty)
        return 0


class RemoveCommand(ClientCommand):
    """``rm ID``: DELETE ``collection``/ID; ``{"deleted": ID}`` with --json."""

    synopsis = "ID"
    arguments = ("id",)
    collection: ClassVar[str] = ""
    noun: ClassVar[str] = ""

    def execute(self, client: AdminClient) -> int:
        client.call("DELETE", f"{self.collection}/{self['id']}")
        if self.as_json:
            output.print_json({"deleted": self["id"]})
        else:
            print(f"deleted {self.noun} {self['id']}")
        return 0


def positive_id(value: str, what: str) -> int:
    if not value.isdigit() or int(value) < 1 or len(value) > 18:
        raise usage.UsageError(f"{what} must be a positive number, not {value!r}")
    return int(value)


def error_line(message: str) -> None:
    sys.stderr.write(f"aegis: error: {message}\n")
    sys.stderr.flush()


def run_client_command(command: ClientCommand) -> int:
    try:
        client = AdminClient(Target.from_options(command))
        try:
            return command.execute(client)
        finally:
            client.close()
    except CommandFailed as exc:
        return command.failed(exc)
    except (KeyError, TypeError, AttributeError) as exc:
        # An answer of another shape than this CLI knows (an older or newer server).
        return command.failed(CommandFailed(
            f"unexpected answer from the server ({type(exc).__name__}: {exc})"))
    except KeyboardInterrupt:
        error_line("interrupted")
        return 130


def leaf(options: usage.Options) -> usage.Options:
    """The innermost sub-command's options (``aegis hosts list`` -> the ``list`` options)."""
    current: Any = options
    while getattr(current, "subOptions", None) is not None:
        current = current.subOptions
    return current  # type: ignore[no-any-return]


class Group(usage.Options):
    """A command made of sub-commands (``aegis hosts list|show|add|rm``)."""

    def postOptions(self) -> None:
        if self.subCommand is None:
            names = "|".join(name for name, *_ in getattr(self, "subCommands", []))
            raise usage.UsageError(f"give a sub-command: {names}")


class LocalCommand(Arguments):
    """A command that works on the files of this machine (backup, restore), not the API."""

    def execute(self) -> int:
        raise NotImplementedError(type(self).__name__)


def run_local_command(command: LocalCommand) -> int:
    try:
        return command.execute()
    except CommandFailed as exc:
        error_line(str(exc))
        return exc.status
    except OSError as exc:
        error_line(f"{exc.strerror or exc} ({exc.filename or 'file system'})")
        return 1
    except KeyboardInterrupt:
        error_line("interrupted; nothing was changed")
        return 130
