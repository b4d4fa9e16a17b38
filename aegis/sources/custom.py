"""Custom upload: PEM pairs a person brings (``POST /api/v1/certificates``, inline host PEM).

Aegis never renews them: a person replaces one by upload (``PUT /api/v1/certificates/{id}``,
same names), and the hosts bound to it follow. They are served to any SNI their SANs cover
(the spec's "domain match").
"""

from aegis.certs.sources import DOMAIN_MATCH, SourceSpec, register

SOURCE = "custom"

SPEC = register(SourceSpec(
    name=SOURCE,
    label="Custom upload",
    selection_step=DOMAIN_MATCH,
    replaceable=True,
    uploads=True,
    renewal_note="renewed by uploading a replacement with PUT /api/v1/certificates/{id}",
))
