"""Run Pebble (Let's Encrypt's RFC 8555 test server) and its DNS helper for tests.

Shipped in the package so users can test their own setups the way Aegis's tests do. Why it
looks like this:

* Debian's ``pebble`` ships no certificate for its own HTTPS directory, so :func:`start_pebble`
  mints a throwaway CA and a ``localhost``/``127.0.0.1`` leaf with ``trustme`` and writes the
  CA as ``ca_bundle`` (what ``AEGIS_ACME_CA_BUNDLE`` points at).
* Every port is a free one picked at start (shared machines hold the well-known 14000/15000).
* ``pebble-challtestsrv`` answers every A query with 127.0.0.1, so any test name resolves to
  the HTTP-01 server the test itself runs on ``http_port``.
* Nonce rejection stays on (Pebble's default 5%): clients must retry ``badNonce``.
* Orders are counted from Pebble's own log ("There are now N orders" / "Added order"), so a
  test can prove that no duplicate order reached the CA.

Start and stop are blocking (subprocess start and a port poll of well under a second): call
them from fixtures or between reactor turns in tests, never from library code.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess  # nosec B404 # test peers, started without a shell
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from aegis.testing.ports import free_port, wait_for_port

PEBBLE = "pebble"
CHALLTESTSRV = "pebble-challtestsrv"


class PebbleError(Exception):
    """Pebble or its DNS helper did not come up."""


def pebble_available() -> bool:
    """True if both ``pebble`` and ``pebble-challtestsrv`` are on PATH."""
    return shutil.which(PEBBLE) is not None and shutil.which(CHALLTESTSRV) is not None


def _wait_for_port(port: int, process: subprocess.Popen[bytes], deadline: float) -> None:
    try:
        wait_for_port(port, process, max(0.0, deadline - time.monotonic()))
    except RuntimeError as exc:
        raise PebbleError(str(exc)) from None


@dataclass
class PebbleServer:
    """A running Pebble + challtestsrv pair; :meth:`stop` / :meth:`start` restart Pebble.

    ``http_port`` is where Pebble sends HTTP-01 validation requests: the test serves its
    challenge responder there. Pebble's roots change at every start: fetch them after it.
    """

    workdir: Path
    ca_bundle: Path
    http_port: int
    acme_port: int
    management_port: int
    dns_port: int
    env: dict[str, str]
    tls_port: int | None = None  # where TLS-ALPN-01 is validated (None: a closed port)
    eab_keys: dict[str, str] | None = None  # kid -> base64url HMAC key: EAB required
    _pebble: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _dns: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log_paths: list[Path] = field(default_factory=list, repr=False)

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.acme_port}/dir"

    @property
    def running(self) -> bool:
        return self._pebble is not None and self._pebble.poll() is None

    def _config_path(self) -> Path:
        path = self.workdir / "pebble-config.json"
        config = {"pebble": {
            "listenAddress": f"127.0.0.1:{self.acme_port}",
            "managementListenAddress": f"127.0.0.1:{self.management_port}",
            "certificate": str(self.workdir / "pebble-cert.pem"),
            "privateKey": str(self.workdir / "pebble-key.pem"),
            "httpPort": self.http_port,
            "tlsPort": self.tls_port if self.tls_port is not None else free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": self.eab_keys is not None,
            **({"externalAccountMACKeys": self.eab_keys} if self.eab_keys else {}),
        }}
        path.write_text(json.dumps(config))
        return path

    def start_dns(self) -> None:
        log = (self.workdir / "challtestsrv.log").open("ab")
        self._dns = subprocess.Popen(  # nosec B603 # fixed argv, no shell
            [CHALLTESTSRV, "-dns01", f"127.0.0.1:{self.dns_port}",
             "-management", f"127.0.0.1:{free_port()}", "-http01", "", "-https01", "",
             "-tlsalpn01", "", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""],
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 10
        # DNS is UDP: wait for the helper to say it serves, or to die.
        log_path = self.workdir / "challtestsrv.log"
        while time.monotonic() < deadline:
            if self._dns.poll() is not None:
                raise PebbleError("pebble-challtestsrv exited at start")
            if "Starting challenge servers" in log_path.read_text(errors="replace"):
                return
            time.sleep(0.02)
        raise PebbleError("pebble-challtestsrv did not start in time")

    def start(self) -> None:
        """Start Pebble (again); blocks until its directory port accepts connections."""
        if self.running:
            return
        log_path = self.workdir / f"pebble-{len(self._log_paths)}.log"
        self._log_paths.append(log_path)
        log = log_path.open("ab")
        self._pebble = subprocess.Popen(  # nosec B603 # fixed argv, no shell
            [PEBBLE, "-config", str(self._config_path()),
             "-dnsserver", f"127.0.0.1:{self.dns_port}", "-strict"],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env},
        )
        log.close()
        deadline = time.monotonic() + 20
        _wait_for_port(self.acme_port, self._pebble, deadline)
        _wait_for_port(self.management_port, self._pebble, deadline)

    def stop(self) -> None:
        """Stop Pebble (not the DNS helper). Pebble forgets every account and order."""
        if self._pebble is not None:
            if self._pebble.poll() is None:
                self._pebble.send_signal(signal.SIGTERM)
                try:
                    self._pebble.wait(10)
                except subprocess.TimeoutExpired:
                    self._pebble.kill()
                    self._pebble.wait()
            self._pebble = None

    def close(self) -> None:
        """Stop both processes."""
        self.stop()
        if self._dns is not None:
            if self._dns.poll() is None:
                self._dns.terminate()
                try:
                    self._dns.wait(10)
                except subprocess.TimeoutExpired:
                    self._dns.kill()
                    self._dns.wait()
            self._dns = None

    def log_text(self) -> str:
        """Everything every Pebble run has logged so far."""
        return "".join(p.read_text(errors="replace") for p in self._log_paths if p.exists())

    def orders_created(self) -> int:
        """How many orders Pebble created, over all its runs (from its log)."""
        return self.log_text().count("Added order")

    def _management_get(self, path: str) -> bytes:
        context = ssl.create_default_context(cafile=str(self.ca_bundle))
        url = f"https://127.0.0.1:{self.management_port}{path}"
        with urllib.request.urlopen(  # nosec B310 # an https URL built here
            url, context=context, timeout=10
        ) as response:
            return bytes(response.read())

    def root_pem(self) -> bytes:
        """The current issuing root (blocking; it changes at each start)."""
        return self._management_get("/roots/0")

    def intermediate_pem(self) -> bytes:
        return self._management_get("/intermediates/0")


def start_pebble(
    workdir: Path | None = None,
    nonce_reject_percent: int | None = None,
    extra_env: dict[str, str] | None = None,
    tls_port: int | None = None,
    eab_keys: dict[str, str] | None = None,
) -> PebbleServer:
    """Start challtestsrv and Pebble on free ports; the caller must ``close()`` the result.

    ``nonce_reject_percent`` None keeps Pebble's default (5%); ``tls_port`` is where Pebble
    validates TLS-ALPN-01 (the HTTPS listener under test; None: a closed port);
    ``eab_keys`` (kid → base64url HMAC key) makes external account binding required.
    """
    import trustme  # test dependency: imported only when a Pebble is wanted

    if not pebble_available():
        raise PebbleError("pebble and pebble-challtestsrv must be on PATH")
    directory = workdir or Path(tempfile.mkdtemp(prefix="aegis-pebble-"))
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    (directory / "pebble-cert.pem").write_bytes(
        b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    )
    leaf.private_key_pem.write_to_path(str(directory / "pebble-key.pem"))
    bundle = directory / "ca-bundle.pem"
    ca.cert_pem.write_to_path(str(bundle))
    env = {"PEBBLE_VA_NOSLEEP": "1"}
    if nonce_reject_percent is not None:
        env["PEBBLE_WFE_NONCEREJECT"] = str(nonce_reject_percent)
    env.update(extra_env or {})
    server = PebbleServer(
        workdir=directory, ca_bundle=bundle, http_port=free_port(), acme_port=free_port(),
        management_port=free_port(), dns_port=free_port(), env=env, tls_port=tls_port,
        eab_keys=eab_keys,
    )
    try:
        server.start_dns()
        server.start()
    except BaseException:
        server.close()
        raise
    return server
