"""A throwaway PostgreSQL server for tests: ``initdb`` + ``pg_ctl`` in a temporary directory.

Shipped in the package so users can test their own setups the way Aegis's tests do. Why it
looks like this:

* The Debian ``postgresql`` package is enough: its binaries live in
  ``/usr/lib/postgresql/<version>/bin`` (not on PATH), and its system cluster is never
  touched. Each cluster is a fresh ``initdb`` in a temporary directory, on a free loopback
  port, with its socket in that directory too.
* PostgreSQL refuses to run as root. Under root the cluster runs as the ``postgres`` user
  (``runuser``), and the temporary directory is handed to it.
* ``fsync``, ``synchronous_commit`` and ``full_page_writes`` are off: a test cluster never
  has to survive a power cut, and this makes it several times faster.
* Authentication is ``trust`` on loopback only; the superuser is ``postgres``.
* :meth:`PostgresCluster.stop` / :meth:`PostgresCluster.start` stop and restart the same
  cluster (its data stays), so a test can take the database away and bring it back.

Start and stop are blocking (a second or two): call them from fixtures, never from
library code.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess  # nosec B404 # test peers, started without a shell
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from aegis.testing.ports import free_port

SERVER_USER = "postgres"
_SPEED = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


class PostgresError(Exception):
    """The throwaway cluster could not be created, started or stopped."""


def postgres_bin_dir() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl``: on PATH, or the newest Debian one."""
    found = shutil.which("initdb")
    if found is not None:
        return Path(found).parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parent.parent.name),
    )
    return Path(candidates[-1]).parent if candidates else None


def postgres_available() -> bool:
    """True if a cluster can be made here (the binaries exist; a ``postgres`` user when
    running as root)."""
    if postgres_bin_dir() is None:
        return False
    if os.geteuid() != 0:
        return True
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        return False
    return True


@dataclass
class PostgresCluster:
    """A running throwaway cluster. ``url`` is its ``postgres`` database (the superuser's);
    :meth:`create_database` gives each test a database of its own."""

    directory: Path
    port: int
    bin_dir: Path
    _names: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def log_file(self) -> Path:
        return self.directory / "server.log"

    def database_url(self, name: str = "postgres") -> str:
        return f"postgresql://{SERVER_USER}@127.0.0.1:{self.port}/{name}"

    @property
    def url(self) -> str:
        return self.database_url()

    def _run(self, *argv: str) -> None:
        command = [str(self.bin_dir / argv[0]), *argv[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        done = subprocess.run(  # nosec B603 # fixed argv, no shell
            command, capture_output=True, text=True, timeout=60, check=False,
            cwd=self.directory,
        )
        if done.returncode != 0:
            raise PostgresError(
                f"{argv[0]} failed ({done.returncode}): {done.stdout}{done.stderr}".strip()
            )

    def init(self) -> None:
        self._run(
            "initdb", "-D", str(self.data_dir), "-U", SERVER_USER, "--auth=trust",
            "--encoding=UTF8", "--locale=C", "--no-sync",
        )

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = " ".join([
            f"-p {self.port}", f"-k {self.directory}", "-c listen_addresses=127.0.0.1",
            *(f"-c {setting}" for setting in _SPEED),
        ])
        self._run(
            "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", "30",
            "-o", options, "start",
        )

    def stop(self) -> None:
        """Stop the server at once (``-m fast``: open sessions are disconnected)."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")

    def running(self) -> bool:
        return (self.data_dir / "postmaster.pid").exists()

    def create_database(self, prefix: str = "aegis_test") -> str:
        """A new empty database; returns its URL."""
        import psycopg

        name = f"{prefix}_{next(self._names)}"
        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')  # name is ours, not input
        return self.database_url(name)

    def close(self) -> None:
        """Stop the server (if running) and delete its files."""
        try:
            if self.running():
                self.stop()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


def start_postgres() -> PostgresCluster:
    """Create and start a cluster on a free port. @raise PostgresError: it did not come up."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        raise PostgresError("no initdb found: install the Debian postgresql package")
    directory = Path(tempfile.mkdtemp(prefix="aegis-pg-"))
    if os.geteuid() == 0:
        server = pwd.getpwnam(SERVER_USER)
        os.chown(directory, server.pw_uid, server.pw_gid)
    cluster = PostgresCluster(directory, free_port(), bin_dir)
    try:
        cluster.init()
        cluster.start()
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return cluster
