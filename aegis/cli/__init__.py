"""The ``aegis`` command line: ``run``, key tools, and shell commands over the admin API.

:mod:`aegis.cli._main` parses and dispatches; each group of shell commands is one module
(``_hosts``, ``_certs``, ``_status``, ``_backup``, ``_export``) on the small synchronous
client of :mod:`aegis.cli._client`.
"""

from aegis.cli._main import main

__all__ = ["main"]
