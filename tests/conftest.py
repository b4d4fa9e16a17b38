"""The suite runs on Aegis's reactor, as ``aegis run`` does.

pytest-twisted then finds a reactor installed; it accepts it because
:class:`aegis.reactor.AegisReactor` is an ``EPollReactor``, the default it would install.
"""

from aegis.reactor import install

install()

pytest_plugins = ("tests.pg_fixtures",)
