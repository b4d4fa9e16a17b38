"""``aegis certs list|show|import|rm|renew`` and ``aegis trust-bundle``.

Certificates go through ``/api/v1/certificates``: the server validates an uploaded pair
(PEM, key match, names, validity), seals the key and reloads the proxy; the CLI never holds
a key longer than the request. ``renew`` knows the two kinds of certificate: an uploaded
(``custom``) one is renewed by uploading its successor (``import --replace``), an automatic
one by asking the lifecycle to retry now, host by host.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

from twisted.python import usage

from aegis.cli import _output as output
from aegis.cli._client import AdminClient, CommandFailed, failure
from aegis.cli._command import ClientCommand, Group, ListCommand, RemoveCommand, positive_id
from aegis.cli._hosts import read_text

CERT_COLUMNS: list[output.Column] = [
    ("ID", output.field("id")),
    ("DOMAINS", output.field("domains")),
    ("SOURCE", output.field("source")),
    ("EXPIRES", output.field("expires_at")),
    ("DAYS", output.field("days_remaining")),
    ("STATUS", output.field("status")),
    ("HOSTS", lambda cert: [host.get("domain") for host in cert.get("hosts") or []]),
    ("PROBLEM", lambda cert: (cert.get("problem") or {}).get("code")),
]


class ListCertificates(ListCommand):
    longdesc = "List every stored certificate: names, source, expiry, status, hosts."
    collection, columns, empty = "/api/v1/certificates", CERT_COLUMNS, "no certificates"


class ShowCertificate(ClientCommand):
    synopsis = "ID [--chain] [--json]"
    longdesc = "Show one certificate; --chain prints its public chain (PEM) instead."
    optFlags = [["chain", None, "Print the certificate chain (PEM, leaf first)."]]
    arguments = ("id",)
    id_of = "the certificate id"

    def execute(self, client: AdminClient) -> int:
        certificate = client.call("GET", f"/api/v1/certificates/{self['id']}")
        if self.as_json:
            output.print_json(certificate)
        elif self["chain"]:
            print(certificate.get("chain_pem", "").rstrip("\n"))
        else:
            shown = dict(certificate)
            shown.pop("chain_pem", None)
            shown["hosts"] = [f"{host.get('domain')} (host {host.get('id')})"
                              for host in certificate.get("hosts") or []]
            output.fields(shown)
        return 0


class ImportCertificate(ClientCommand):
    synopsis = "CERT_FILE KEY_FILE [--domain NAME]... [--replace ID]"
    arguments = ("cert-file", "key-file")
    longdesc = ("Upload a certificate (PEM, optionally followed by its intermediates) and its "
                "private key. With --replace ID, renew that custom certificate in place: hosts "
                "bound to it serve the new one at once.")
    optParameters = [
        ["replace", None, None, "Id of the custom certificate this one replaces"],
        ["key-passphrase-file", None, None, "File holding the passphrase of KEY_FILE"],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["domains"] = []

    def opt_domain(self, name: str) -> None:
        """A name the certificate must cover (repeat for several; checked by the server)."""
        self["domains"].append(name)

    def postOptions(self) -> None:
        if self["replace"] is not None:
            self["replace"] = positive_id(self["replace"], "--replace")

    def execute(self, client: AdminClient) -> int:
        body: dict[str, Any] = {"cert_pem": read_text(self["cert-file"]),
                                "key_pem": read_text(self["key-file"])}
        if self["domains"]:
            body["domains"] = list(self["domains"])
        if self["key-passphrase-file"] is not None:
            body["key_passphrase"] = read_text(self["key-passphrase-file"]).strip()
        if self["replace"] is None:
            certificate = client.call("POST", "/api/v1/certificates", body)
            done = "stored"
        else:
            certificate = client.call("PUT", f"/api/v1/certificates/{self['replace']}", body)
            done = "replaced"
        if self.as_json:
            output.print_json(certificate)
        else:
            print(f"{done} certificate {certificate['id']}: "
                  f"{', '.join(certificate['domains'])}, expires {certificate['expires_at']}")
        return 0


class RemoveCertificate(RemoveCommand):
    longdesc = "Delete a certificate that no host uses (the server names the hosts if any)."
    id_of, collection, noun = "the certificate id", "/api/v1/certificates", "certificate"


class RenewCertificate(ClientCommand):
    synopsis = "ID"
    longdesc = ("Renew a certificate now. An automatic certificate (Let's Encrypt, Cloudflare "
                "Origin with automatic renewal) is re-ordered at once through the lifecycle "
                "(POST /api/v1/certificates/ID/renew); an uploaded one is renewed by "
                "uploading its successor with `aegis certs import --replace ID`.")
    arguments = ("id",)
    id_of = "the certificate id"

    def execute(self, client: AdminClient) -> int:
        client.call("GET", f"/api/v1/certificates/{self['id']}")  # an unknown id: its 404
        path = f"/api/v1/certificates/{self['id']}/renew"
        response = client.request("POST", path)
        if response.status in (404, 405):  # the certificate exists: the route does not
            raise CommandFailed(
                f"this server does not support renewing on demand (POST {path} answered "
                f"{response.status}); it renews automatic certificates by itself")
        if response.status == 409:
            raise CommandFailed(failure(response).args[0] + "; an uploaded certificate is "
                                f"renewed with `aegis certs import --replace {self['id']} "
                                "CERT_FILE KEY_FILE`")
        if response.status >= 400:
            raise failure(response)
        state = response.json()
        if self.as_json:
            output.print_json({"certificate_id": self["id"], "lifecycle": state})
        else:
            print(f"certificate {self['id']}: renewal of {', '.join(state['names'])} "
                  f"{'started' if state.get('in_flight') else state['status']}"
                  + (f"; next attempt at {state['next_attempt_at']}"
                     if state.get("next_attempt_at") else ""))
        return 0


class CertsOptions(Group):
    synopsis = "list|show|import|rm|renew [options]"
    longdesc = "Stored certificates, through the admin API of the running server."
    subCommands = [
        ["list", None, ListCertificates, "List certificates."],
        ["show", None, ShowCertificate, "Show one certificate."],
        ["import", None, ImportCertificate, "Upload (or replace) a certificate and key."],
        ["rm", None, RemoveCertificate, "Delete an unused certificate."],
        ["renew", None, RenewCertificate, "Renew a certificate now."],
    ]


class TrustBundle(ClientCommand):
    synopsis = "--out FILE [--pem]"
    longdesc = ("Download the admin trust bundle: a ZIP of the local CA certificate and "
                "install steps (or, with --pem, the CA certificate alone). No token needed.")
    optParameters = [["out", "o", None, "Where to write it (required)"]]
    optFlags = [["pem", None, "Write only the CA certificate (PEM), not the ZIP."]]

    def postOptions(self) -> None:
        if not self["out"]:
            raise usage.UsageError("give --out FILE")

    def execute(self, client: AdminClient) -> int:
        response = client.request("GET", "/api/v1/settings/admin-trust-bundle",
                                  authenticated=False)
        if response.status != 200:
            raise failure(response)
        data = response.body
        if self["pem"]:
            try:
                with zipfile.ZipFile(io.BytesIO(data)) as archive:
                    data = archive.read("aegis-local-ca.crt")
            except (zipfile.BadZipFile, KeyError):
                raise CommandFailed("the trust bundle is not the expected ZIP") from None
        try:
            Path(self["out"]).write_bytes(data)
        except OSError as exc:
            raise CommandFailed(f"cannot write {self['out']}: {exc.strerror}") from None
        if self.as_json:
            output.print_json({"out": self["out"], "bytes": len(data)})
        else:
            print(f"wrote {self['out']} ({len(data)} bytes)")
        return 0
