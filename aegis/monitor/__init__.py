"""Never expire silently: the expiry monitor, alerts, Prometheus metrics and health.

* :mod:`.levels` — ok / warning / critical / expired, relative to each lifetime;
* :mod:`.inventory` — every certificate watched (stored ones, the local CA files);
* :mod:`.evaluate` — one pass: levels, level changes, the alerts they make;
* :mod:`.kinds` — the other alerts (renewal failed or recovered, deleted or retired while
  serving, store failing or back, clock jumped), each with its transition key;
* :mod:`.monitor` — :class:`~aegis.monitor.monitor.ExpiryMonitor`, the service;
* :mod:`.alerts`, :mod:`.delivery`, :mod:`.webhook`, :mod:`.mail` — alerts and channels;
* :mod:`.counters`, :mod:`.metrics` — hot-path counters, the scrape-time collector;
* :mod:`.status` — health and the UI banner; :mod:`.wiring` — built from the settings.

This module imports nothing: :mod:`aegis.config` reads :mod:`.options` early.
See docs/monitoring.md.
"""
