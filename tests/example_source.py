"""The worked example of docs/lifecycle.md: a whole certificate source in one module.

It would live at ``aegis/sources/fake_ca.py``; its registration line is
``"aegis.sources.fake_ca",`` in :data:`aegis.sources.SOURCE_MODULES`. Hosts whose ssl_mode is
``fake-ca`` (a test-only mode: the spec's modes are none, letsencrypt and custom) get a
6-day certificate from :class:`aegis.testing.issuer.FakeIssuer`; the lifecycle engine
obtains, stores, serves and renews it like any other source's.
"""

from datetime import timedelta

from aegis.certs.lifecycle.issuers import IssuerContext
from aegis.certs.sources import AUTOCERT, SourceSpec, register
from aegis.testing.issuer import FakeIssuer

SOURCE = "fake"


def _issuer(context: IssuerContext) -> FakeIssuer:
    return FakeIssuer(context.clock, source=SOURCE, identity="fake-ca example-account",
                      lifetime=timedelta(days=6))


SPEC = register(SourceSpec(
    name=SOURCE,
    label="Fake CA (example)",
    selection_step=AUTOCERT,
    host_mode="fake-ca",
    renews_itself=True,
    issuer=_issuer,
    renewal_note="renewed by Aegis from the fake CA",
))
