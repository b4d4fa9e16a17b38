"""``python -m aegis`` is the same as the ``aegis`` console script."""

from aegis.cli import main

raise SystemExit(main())
