"""``aegis hosts list|show|add|rm``: proxy hosts through ``/api/v1/hosts``.

The server validates everything (names, upstream, SSL combinations) and its refusals are
printed as they come, naming the field; the CLI only shapes the request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.python import usage

from aegis.certs.sources import MODE_BOUND
from aegis.cli import _output as output
from aegis.cli._client import AdminClient, CommandFailed
from aegis.cli._command import ClientCommand, Group, ListCommand, RemoveCommand, positive_id

HOST_COLUMNS: list[output.Column] = [
    ("ID", output.field("id")),
    ("DOMAIN", output.field("domain")),
    ("ALIASES", output.field("aliases")),
    ("UPSTREAM", output.field("upstream")),
    ("SSL", output.field("ssl_mode")),
    ("CERT", output.field("ssl_cert_id")),
    ("SERVING", lambda host: _serving(host.get("serving_certificate"))),
]


def _serving(chosen: Any) -> str:
    if not isinstance(chosen, dict):
        return "-"
    if chosen.get("certificate_id") is None:
        return f"{chosen.get('source')} {chosen.get('step')}"
    return f"{chosen.get('source')} #{chosen.get('certificate_id')} ({chosen.get('step')})"


class ListHosts(ListCommand):
    longdesc = "List every proxy host and the certificate it is served with."
    collection, columns, empty = "/api/v1/hosts", HOST_COLUMNS, "no proxy hosts"


class ShowHost(ClientCommand):
    synopsis = "ID [--json]"
    longdesc = ("Show one proxy host: its settings, the certificate it is served with, and "
                "where automatic issuance stands for each of its names.")
    arguments = ("id",)
    id_of = "the host id"

    def execute(self, client: AdminClient) -> int:
        host = client.call("GET", f"/api/v1/hosts/{self['id']}")
        if self.as_json:
            output.print_json(host)
            return 0
        output.fields({key: value for key, value in host.items() if key != "issuance"})
        for state in host.get("issuance") or []:
            error = f", last error: {state.get('last_error')}" if state.get("last_error") else ""
            print(f"acme {state.get('name')}: {state.get('status')}"
                  f", next attempt {output.text(state.get('next_attempt_at'))}{error}")
        return 0


def _flag(value: str, name: str) -> bool:
    lowered = value.lower()
    if lowered in ("yes", "true", "on", "1"):
        return True
    if lowered in ("no", "false", "off", "0"):
        return False
    raise usage.UsageError(f"--{name} takes yes or no, not {value!r}")


class AddHost(ClientCommand):
    synopsis = "DOMAIN UPSTREAM [options]"
    arguments = ("domain", "upstream")
    longdesc = ("Create a proxy host for DOMAIN sending requests to UPSTREAM "
                "(http://host:port or https://host:port). With --cert-id, or --cert-file and "
                "--key-file, the host serves that certificate (ssl_mode custom).")
    optParameters = [
        ["ssl-mode", None, None, "none, letsencrypt or custom [default: the server's, or "
         "custom with a certificate]"],
        ["cert-id", None, None, "Id of a stored certificate to serve"],
        ["cert-file", None, None, "PEM certificate chain to store and serve"],
        ["key-file", None, None, "PEM private key of --cert-file"],
        ["key-passphrase-file", None, None, "File holding the passphrase of --key-file"],
        ["force-https", None, None, "yes/no: redirect HTTP to HTTPS"],
        ["hsts", None, None, "yes/no: send Strict-Transport-Security"],
        ["tls-min-version", None, None, "1.2 or 1.3"],
        ["upstream-tls-verify", None, None, "yes/no: verify an https upstream's certificate"],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["aliases"] = []

    def opt_alias(self, name: str) -> None:
        """A further name of the host (repeat for several)."""
        self["aliases"].append(name)

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"domain": self["domain"], "upstream": self["upstream"]}
        if self["aliases"]:
            body["aliases"] = list(self["aliases"])
        if self["cert-id"] is not None:
            body["ssl_cert_id"] = positive_id(self["cert-id"], "--cert-id")
        if self["cert-file"] is not None:
            body["ssl_cert_pem"] = read_text(self["cert-file"])
            body["ssl_key_pem"] = read_text(self["key-file"])
            if self["key-passphrase-file"] is not None:
                body["ssl_key_passphrase"] = read_text(self["key-passphrase-file"]).strip()
        if self["ssl-mode"] is not None:
            body["ssl_mode"] = self["ssl-mode"]
        elif "ssl_cert_id" in body or "ssl_cert_pem" in body:
            body["ssl_mode"] = MODE_BOUND
        for option, name in (("force-https", "force_https"), ("hsts", "hsts_enabled"),
                             ("upstream-tls-verify", "upstream_tls_verify")):
            if self[option] is not None:
                body[name] = _flag(self[option], option)
        if self["tls-min-version"] is not None:
            body["tls_min_version"] = self["tls-min-version"]
        return body

    def postOptions(self) -> None:
        if self["cert-id"] is not None:
            positive_id(self["cert-id"], "--cert-id")
        if (self["cert-file"] is None) != (self["key-file"] is None):
            raise usage.UsageError("--cert-file and --key-file go together")
        for option in ("force-https", "hsts", "upstream-tls-verify"):
            if self[option] is not None:
                _flag(self[option], option)

    def execute(self, client: AdminClient) -> int:
        host = client.call("POST", "/api/v1/hosts", self.body())
        if self.as_json:
            output.print_json(host)
        else:
            print(f"created host {host['id']}: {host['domain']} -> {host['upstream']} "
                  f"(ssl {host['ssl_mode']})")
        return 0


class RemoveHost(RemoveCommand):
    longdesc = "Delete a proxy host. Its certificate stays stored."
    id_of, collection, noun = "the host id", "/api/v1/hosts", "host"


class HostsOptions(Group):
    synopsis = "list|show|add|rm [options]"
    longdesc = "Proxy hosts, through the admin API of the running server."
    subCommands = [
        ["list", None, ListHosts, "List proxy hosts."],
        ["show", None, ShowHost, "Show one proxy host."],
        ["add", None, AddHost, "Create a proxy host."],
        ["rm", None, RemoveHost, "Delete a proxy host."],
    ]


def read_text(name: str) -> str:
    """A file the user named, or one clear line saying why it cannot be read."""
    try:
        return Path(name).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise CommandFailed(f"cannot read {name}: {reason}", status=2) from None
