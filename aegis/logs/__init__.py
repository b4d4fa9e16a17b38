"""Aegis's two logs, kept apart the way nginx keeps them.

* The **access log** (:mod:`aegis.logs.access`): one line per request, ``combined`` or
  ``json``, written in batches to a file, stdout or nowhere (``AEGIS_ACCESS_LOG``), reopened
  on SIGUSR1 for logrotate. It does not go through ``twisted.logger``: the issue that asked
  for it measured that path at 38% of the event loop under load.
* The **application log** (:mod:`aegis.logs.application`): ``twisted.logger`` events
  (start-up, certificates, errors) with a level (``AEGIS_LOG_LEVEL``) and a text or JSON
  line format (``AEGIS_LOG_FORMAT``) on stdout.
"""

from aegis.logs.access import AccessLog
from aegis.logs.application import start_application_log, twistd_observer
from aegis.logs.files import BatchedLogFile

__all__ = ["AccessLog", "BatchedLogFile", "start_application_log", "twistd_observer"]
