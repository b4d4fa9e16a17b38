"""``aegis export FILE`` and ``aegis import FILE``: hosts and certificates as JSON.

An export is what the admin API shows (hosts with their settings, certificates with their
public chain), so it can be read, diffed and edited. Private keys are left out unless
``--include-keys`` is given; then each key is written as an encrypted PKCS#8 PEM
(``BEGIN ENCRYPTED PRIVATE KEY``: PBES2, AES-256-CBC, key derived with PBKDF2 from the
passphrase in ``--passphrase-file`` or ``AEGIS_EXPORT_PASSPHRASE``). The server never hands
out keys, so those are read from this machine's database and opened with its master key,
in memory, only to be sealed again under the passphrase: a plaintext key is never written.

Import goes through the admin API, so every rule of the server applies (PEM, key match,
validity, names, SSL combinations) and refusals are reported with the server's message.
Nothing is overwritten: a certificate whose fingerprint the target already has, and a host
whose domain it already has, are skipped and reported. Exit 0 when nothing failed, else 1.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from aegis import __version__
from aegis.certs import sources
from aegis.cli import _output as output
from aegis.cli._archive import atomic_output
from aegis.cli._backup import settings_for
from aegis.cli._client import AdminClient, CommandFailed
from aegis.cli._command import ClientCommand
from aegis.cli._hosts import read_text
from aegis.timefmt import to_text, utcnow

FORMAT = "aegis-export"
FORMAT_VERSION = 1
PASSPHRASE_ENV = "AEGIS_EXPORT_PASSPHRASE"  # noqa: S105 - a variable name
MIN_PASSPHRASE = 12
HOST_FIELDS = ("domain", "aliases", "upstream", "upstream_tls_verify", "ssl_mode",
               "ssl_cert_id", "force_https", "hsts_enabled", "hsts_max_age",
               "hsts_include_subdomains", "hsts_preload", "tls_min_version")
CERT_FIELDS = ("id", "domains", "source", "issuer", "expires_at", "auto_renew",
               "fingerprint_sha256", "chain_pem")


def passphrase(option: str | None) -> bytes:
    text = read_text(option).strip() if option else os.environ.get(PASSPHRASE_ENV, "")
    if not text:
        raise CommandFailed(f"keys need a passphrase: give --passphrase-file or set "
                            f"{PASSPHRASE_ENV}", status=2)
    if len(text) < MIN_PASSPHRASE:
        raise CommandFailed(f"the passphrase must have at least {MIN_PASSPHRASE} characters",
                            status=2)
    return text.encode("utf-8")


def _keys_by_fingerprint(data_dir: str | None, ssl_key: str | None,
                         secret: bytes) -> dict[str, str]:
    """Every stored key, opened with the master key and re-encrypted under ``secret``."""
    from aegis.crypto.keywrap import KeyWrapper, MasterKey, UnwrapError
    from aegis.crypto.masterkey import STORED_KEY_SETTING, KeyMismatch, verify_master_key
    from aegis.crypto.sealed import certificate_key_context
    from aegis.store._runner import immediate_runner
    from aegis.store.errors import StoreError
    from aegis.store.sqlite import SQLiteStore

    settings = settings_for({"data_dir": data_dir, "ssl_key": ssl_key})
    if not settings.database_path.is_file():
        raise CommandFailed(f"--include-keys reads the keys from {settings.database_path}, "
                            "which does not exist (see --data-dir)")
    try:
        store = SQLiteStore.open(settings.database_path, immediate_runner, migrate=False)
    except StoreError as exc:
        raise CommandFailed(str(exc)) from None
    try:
        def read(txn: Any) -> tuple[MasterKey, list[Any]]:
            verify_master_key(txn, settings.ssl_key)
            stored = txn.get_setting(STORED_KEY_SETTING)
            key = settings.ssl_key or (MasterKey.from_hex(stored) if stored else None)
            if key is None:
                raise KeyMismatch("set AEGIS_SSL_KEY: the keys are sealed under it")
            return key, txn.list_certificates()

        key, records = store.transact_blocking(read)
    except (KeyMismatch, StoreError) as exc:
        raise CommandFailed(f"cannot open the stored keys: {exc}") from None
    finally:
        store.close()
    wrapper, encryption = KeyWrapper(key), serialization.BestAvailableEncryption(secret)
    keys: dict[str, str] = {}
    for record in records:
        try:
            pem = wrapper.open(record.key_sealed, certificate_key_context(record.uid))
            private = serialization.load_pem_private_key(pem, password=None)
        except (UnwrapError, ValueError, TypeError):
            # A damaged key (the server flags that certificate too): exported without it.
            sys.stderr.write(f"aegis: warning: the key of certificate {record.id} does not "
                             "open; it is exported without its key\n")
            continue
        keys[record.fingerprint_sha256] = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption,
        ).decode("ascii")
    return keys


class ExportCommand(ClientCommand):
    synopsis = "FILE [--include-keys --passphrase-file FILE]"
    longdesc = ("Write every proxy host and certificate (public chain) as JSON. With "
                "--include-keys, private keys too, encrypted under a passphrase (read from "
                "this machine's database). See docs/backup.md.")
    optFlags = [["include-keys", None, "Also export the private keys, passphrase-encrypted."]]
    optParameters = [
        ["passphrase-file", None, None, f"File holding the passphrase for the keys [env "
         f"{PASSPHRASE_ENV}]"],
        ["ssl-key", None, None, "Master key of the database, for --include-keys [env "
         "AEGIS_SSL_KEY; default: the key stored in the database]"],
    ]
    arguments = ("out",)

    def execute(self, client: AdminClient) -> int:
        secret = passphrase(self["passphrase-file"]) if self["include-keys"] else None
        hosts = client.call("GET", "/api/v1/hosts")
        certificates = [client.call("GET", f"/api/v1/certificates/{cert['id']}")
                        for cert in client.call("GET", "/api/v1/certificates")]
        keys = ({} if secret is None else
                _keys_by_fingerprint(self["data-dir"], self["ssl-key"], secret))
        exported = []
        for cert in certificates:
            entry = {name: cert.get(name) for name in CERT_FIELDS}
            if secret is not None:
                entry["key_pem"] = keys.get(cert["fingerprint_sha256"])
            exported.append(entry)
        document = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "aegis_version": __version__,
            "exported_at": to_text(utcnow()),
            "keys": "pkcs8-passphrase" if secret is not None else "none",
            "certificates": exported,
            "hosts": [{"id": host["id"], **{name: host.get(name) for name in HOST_FIELDS}}
                      for host in hosts],
        }
        out = Path(self["out"])
        try:
            with atomic_output(out) as handle:
                handle.write(json.dumps(document, indent=2).encode("utf-8") + b"\n")
        except OSError as exc:
            raise CommandFailed(f"cannot write {out}: {exc.strerror}") from None
        summary = {"out": str(out), "hosts": len(hosts), "certificates": len(exported),
                   "keys": sum(1 for entry in exported if entry.get("key_pem"))}
        if self.as_json:
            output.print_json(summary)
        else:
            print(f"wrote {out}: {summary['hosts']} host(s), {summary['certificates']} "
                  f"certificate(s), {summary['keys']} private key(s) (passphrase-encrypted)"
                  if secret is not None else
                  f"wrote {out}: {summary['hosts']} host(s), {summary['certificates']} "
                  "certificate(s), no private keys")
        return 0


def load_export(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(read_text(str(path)))
    except ValueError:
        raise CommandFailed(f"{path} is not JSON") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise CommandFailed(f"{path} is not an Aegis export (format {FORMAT!r})")
    if document.get("format_version") != FORMAT_VERSION:
        raise CommandFailed(f"{path} has export format version "
                            f"{document.get('format_version')!r}; this Aegis reads "
                            f"{FORMAT_VERSION}")
    for part in ("certificates", "hosts"):
        if not isinstance(document.get(part), list) or not all(
                isinstance(item, dict) for item in document[part]):
            raise CommandFailed(f"{path}: {part} must be a list of objects")
    return document


class Outcome:
    """What happened to each exported item; printed as a table or JSON."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, kind: str, old_id: Any, name: str, result: str, new_id: Any = None,
            reason: str | None = None) -> None:
        self.rows.append({"kind": kind, "export_id": old_id, "name": name, "result": result,
                          "id": new_id, "reason": reason})

    def create(self, client: AdminClient, path: str, body: dict[str, Any], kind: str,
               old_id: Any, name: str) -> dict[str, Any] | None:
        """POST ``body``; record it created, or failed with the server's message."""
        try:
            created: dict[str, Any] = client.call("POST", path, body)
        except CommandFailed as exc:
            self.add(kind, old_id, name, "failed", None, str(exc))
            return None
        self.add(kind, old_id, name, "created", created["id"])
        return created

    def failed(self) -> bool:
        return any(row["result"] == "failed" for row in self.rows)


def _renews_itself(source: object) -> bool:
    """A certificate the target Aegis obtains by itself (ACME): not imported."""
    return isinstance(source, str) and sources.known(source) and sources.get(source).renews_itself


def _import_certificates(client: AdminClient, document: dict[str, Any],
                         secret: bytes | None, outcome: Outcome) -> dict[Any, int]:
    present = {cert.get("fingerprint_sha256"): cert["id"]
               for cert in client.call("GET", "/api/v1/certificates")}
    wanted_by_custom_hosts = {host.get("ssl_cert_id") for host in document["hosts"]
                              if host.get("ssl_mode") == sources.MODE_BOUND}
    mapping: dict[Any, int] = {}
    for cert in document["certificates"]:
        old, name = cert.get("id"), ", ".join(cert.get("domains") or []) or "?"
        if cert.get("fingerprint_sha256") in present:
            mapping[old] = present[cert["fingerprint_sha256"]]
            outcome.add("certificate", old, name, "skipped", mapping[old], "already present")
        elif _renews_itself(cert.get("source")) and old not in wanted_by_custom_hosts:
            outcome.add("certificate", old, name, "skipped", None,
                        "issued automatically: the target orders its own")
        elif not cert.get("key_pem"):
            outcome.add("certificate", old, name, "skipped", None,
                        "no private key in the export (export with --include-keys)")
        else:
            body = {"cert_pem": cert.get("chain_pem"), "key_pem": cert["key_pem"]}
            if secret is not None:
                body["key_passphrase"] = secret.decode("utf-8")
            created = outcome.create(client, "/api/v1/certificates", body,
                                     "certificate", old, name)
            if created is not None:
                mapping[old] = created["id"]
                present[created.get("fingerprint_sha256")] = created["id"]
    return mapping


def _import_hosts(client: AdminClient, document: dict[str, Any], mapping: dict[Any, int],
                  outcome: Outcome) -> None:
    present = {host.get("domain"): host["id"] for host in client.call("GET", "/api/v1/hosts")}
    for host in document["hosts"]:
        old, name = host.get("id"), str(host.get("domain"))
        if name in present:
            outcome.add("host", old, name, "skipped", present[name], "already present")
            continue
        body = {field: host[field] for field in HOST_FIELDS if field in host}
        if body.get("ssl_cert_id") is not None:
            if body["ssl_cert_id"] not in mapping:
                outcome.add("host", old, name, "skipped", None, f"its certificate "
                            f"{body['ssl_cert_id']} was not imported")
                continue
            body["ssl_cert_id"] = mapping[body["ssl_cert_id"]]
        created = outcome.create(client, "/api/v1/hosts", body, "host", old, name)
        if created is not None:
            present[name] = created["id"]


class ImportCommand(ClientCommand):
    synopsis = "FILE [--passphrase-file FILE]"
    longdesc = ("Create the hosts and certificates of an `aegis export` file through the "
                "admin API; what the target already has (same certificate fingerprint, same "
                "host domain) is skipped. Exit 1 if anything failed.")
    optParameters = [
        ["passphrase-file", None, None, f"File holding the passphrase of the exported keys "
         f"[env {PASSPHRASE_ENV}]"],
    ]
    arguments = ("file",)

    def execute(self, client: AdminClient) -> int:
        document = load_export(Path(self["file"]))
        has_keys = any(cert.get("key_pem") for cert in document["certificates"])
        secret = passphrase(self["passphrase-file"]) if has_keys else None
        outcome = Outcome()
        mapping = _import_certificates(client, document, secret, outcome)
        _import_hosts(client, document, mapping, outcome)
        if self.as_json:
            output.print_json({"results": outcome.rows, "failed": outcome.failed()})
        else:
            output.table(outcome.rows, [
                ("KIND", output.field("kind")), ("EXPORT ID", output.field("export_id")),
                ("NAME", output.field("name")), ("RESULT", output.field("result")),
                ("ID", output.field("id")), ("REASON", output.field("reason")),
            ], empty="nothing to import")
        return 1 if outcome.failed() else 0

