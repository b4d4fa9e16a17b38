"""The ``aegis`` console script and ``python -m aegis``: choose the reactor, then the CLI.

The reactor has to be installed before anything imports ``twisted.internet.reactor``, and
Klein does that at import time, so this module imports nothing of Aegis until
:func:`aegis.reactor.install` has run (for ``aegis run``; the other commands run no
reactor). A program that already installed a reactor (a test runner, an embedding
application) keeps its own.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    # Only ``aegis run`` runs a reactor; the shell commands skip the half second it costs.
    if words[:1] == ["run"] and "twisted.internet.reactor" not in sys.modules:
        from aegis.reactor import install

        install()
    from aegis.cli import main as cli_main

    return cli_main(words)
