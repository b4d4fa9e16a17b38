"""``GET /api/v1/settings/admin-trust-bundle``: the local CA certificate with install steps.

Public (no token): it serves only the CA *certificate*, which is public by nature and
already sent in every TLS handshake of the admin listener; people need it before they
can trust that listener. The Host/Origin guards still apply.
"""

from __future__ import annotations

import io
import zipfile

from twisted.web.iweb import IRequest

from aegis.admin._routing import AdminContext, BytesResponse, RouteTable
from aegis.localca import CA_CERT_FILE

routes = RouteTable(tag="settings")

README = """\
Aegis local certificate authority
=================================

aegis-local-ca.crt is the certificate of the local CA that Aegis generated on first run.
It signs the admin UI certificate and the proxy fallback certificate. Trust it once and
your browser and OS accept every certificate Aegis generates, without warnings.
Only trust it on machines you administer Aegis from.

macOS:
# Add to system keychain
sudo security add-trusted-cert -d -r trustRoot \\
  -k /Library/Keychains/System.keychain aegis-local-ca.crt

Windows:
# Import to Trusted Root Certification Authorities
certutil -addstore -f "Root" aegis-local-ca.crt

Linux (Debian/Ubuntu):
sudo cp aegis-local-ca.crt /usr/local/share/ca-certificates/aegis-local-ca.crt
sudo update-ca-certificates

Linux (RHEL/Fedora):
sudo cp aegis-local-ca.crt /etc/pki/ca-trust/source/anchors/aegis-local-ca.crt
sudo update-ca-trust

Browser (Firefox - uses its own trust store):
- Open Settings -> Privacy & Security -> Certificates -> View Certificates
- Import aegis-local-ca.crt under the Authorities tab
- Check "Trust this CA to identify websites"

After installation, the browser/OS will trust all certificates signed by the Aegis local
CA without showing warnings. If the CA is ever regenerated (its files were deleted), download
this bundle again and replace the old certificate.
"""

# A fixed timestamp keeps the archive byte-identical for the same certificate.
_ZIP_TIME = (2020, 1, 1, 0, 0, 0)


def trust_bundle(ca_pem: bytes) -> bytes:
    """The ZIP: exactly ``aegis-local-ca.crt`` (PEM) and ``README.txt``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in ((CA_CERT_FILE, ca_pem), ("README.txt", README.encode("utf-8"))):
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return buffer.getvalue()


@routes.route(
    "GET", "/api/v1/settings/admin-trust-bundle",
    summary="Download the local CA trust bundle (ZIP)",
    responses={200: ("ZIP with aegis-local-ca.crt and README.txt",
                     {"type": "string", "format": "binary"})},
    content_type="application/zip",
    public=True,
)
async def get_admin_trust_bundle(ctx: AdminContext, request: IRequest,
                                 authenticated: bool = False) -> BytesResponse:
    """The CA certificate (public) and installation steps for each platform."""
    return BytesResponse(
        trust_bundle(ctx.local_ca.ca_pem),
        "application/zip",
        headers={"Content-Disposition": 'attachment; filename="aegis-trust-bundle.zip"'},
    )
