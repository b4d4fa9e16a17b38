"""``python -m aegis`` is the same as the ``aegis`` console script."""

from aegis.launch import main

raise SystemExit(main())
