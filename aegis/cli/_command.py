"""The shape of a shell command that talks to the server, and how it is run.

A command is a :class:`ClientCommand` (its options, parsed by ``twisted.python.usage``) with
an ``execute(client)`` method returning the exit status. :func:`run_client_command` builds
the client from the options and turns every :class:`CommandFailed` into one line on stderr
and its exit status: a person never sees a traceback, a script gets a non-zero status.
"""

from __future__ import annotations

import sys
from typing import Any, ClassVar

from twisted.python import usage

from aegis.cli._client import AdminClient, ClientOptions, CommandFailed, Target


class ClientCommand(ClientOptions):
    """Options of one command; subclasses implement :meth:`execute`.

    ``arguments`` names the positional arguments; they land in ``self[name]``, and one
    named ``id`` must be a positive number (``id_of`` says whose, for the message).
    """

    arguments: ClassVar[tuple[str, ...]] = ()
    id_of: ClassVar[str] = "the id"

    def parseArgs(self, *args: str) -> None:
        if len(args) != len(self.arguments):
            wanted = " ".join(name.upper().replace("-", "_") for name in self.arguments)
            raise usage.UsageError(f"expected {wanted or 'no arguments'}")
        for name, value in zip(self.arguments, args, strict=True):
            self[name] = positive_id(value, self.id_of) if name == "id" else value

    def execute(self, client: AdminClient) -> int:
        raise NotImplementedError(type(self).__name__)

    def failed(self, error: CommandFailed) -> int:
        """Report ``error`` (one line on stderr) and return the exit status."""
        error_line(str(error))
        return error.status

    @property
    def as_json(self) -> bool:
        return bool(self["json"])


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
