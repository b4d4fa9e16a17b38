"""A small synchronous client of the admin API for the shell commands.

The CLI runs one request after another and exits, so the standard library's
``http.client`` over ``ssl`` is all it needs: no reactor, no Deferreds, and nothing that
prints a traceback. Every failure becomes :class:`CommandFailed`, whose text is one line for
a person (the API's own error message when there is one), never a token.

Where things come from, first match wins:

* the server: ``--admin-url``, ``AEGIS_ADMIN_URL``, else derived from ``AEGIS_ADMIN_LISTEN``
  (``tcp:9443:interface=127.0.0.1`` -> ``https://127.0.0.1:9443``);
* trust: ``--ca-file``, else ``<ssl cache dir>/aegis-local-ca.crt`` (the local CA that signs
  the admin listener's certificate); the server's name is checked against it;
* the token: ``--token-file``, ``AEGIS_ADMIN_TOKEN``, else ``<data dir>/admin-token``, the
  file the server writes when it generates its token.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DEFAULT_ADMIN_URL = "https://127.0.0.1:9443"
CA_CERT_FILE = "aegis-local-ca.crt"
TOKEN_FILE = "admin-token"  # noqa: S105 - a file name (aegis.admin._auth.TOKEN_FILE)
TIMEOUT = 30.0


class CommandFailed(Exception):
    """A command cannot do what was asked. ``str()`` is one line for a person; ``status``
    is the exit status (1 unless said otherwise)."""

    def __init__(self, message: str, status: int = 1, http_status: int | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.http_status = http_status
        self.code = code


def _admin_url_from_listen(description: str) -> str:
    """``https://HOST:PORT`` for a TCP listener description, else the default."""
    from twisted.internet.endpoints import serverFromString
    from twisted.internet.testing import MemoryReactor

    try:
        endpoint = serverFromString(MemoryReactor(), description)
    except (ValueError, TypeError, KeyError):
        return DEFAULT_ADMIN_URL
    port, interface = getattr(endpoint, "_port", None), getattr(endpoint, "_interface", None)
    if not isinstance(port, int) or port == 0:
        return DEFAULT_ADMIN_URL
    if not interface or interface in ("0.0.0.0", "::"):  # noqa: S104 - reaching it, not binding
        interface = "127.0.0.1"
    host = f"[{interface}]" if ":" in interface else interface
    return f"https://{host}:{port}"


@dataclass(frozen=True)
class Target:
    """Where the server is, how to trust it and how to authenticate."""

    base_url: str
    ca_file: Path
    token: str | None
    token_origin: str

    @classmethod
    def from_options(cls, options: Mapping[str, Any],
                     environ: Mapping[str, str] | None = None) -> Target:
        env = os.environ if environ is None else environ
        url = (options.get("admin-url") or env.get("AEGIS_ADMIN_URL")
               or _admin_url_from_listen(env.get("AEGIS_ADMIN_LISTEN", "")))
        data_dir = Path(options.get("data-dir") or env.get("AEGIS_DATA_DIR") or "data")
        cache_dir = Path(options.get("ssl-cache-dir") or env.get("AEGIS_SSL_CACHE_DIR")
                         or ".cache/ssl")
        ca_file = Path(options.get("ca-file") or cache_dir / CA_CERT_FILE)
        token, origin = _token(options.get("token-file"), env, data_dir)
        return cls(url.rstrip("/"), ca_file, token, origin)


def _token(token_file: str | None, env: Mapping[str, str],
           data_dir: Path) -> tuple[str | None, str]:
    if token_file:
        return _read_token(Path(token_file)), f"--token-file {token_file}"
    if env.get("AEGIS_ADMIN_TOKEN"):
        return env["AEGIS_ADMIN_TOKEN"], "AEGIS_ADMIN_TOKEN"
    path = data_dir / TOKEN_FILE
    if not path.exists():
        return None, str(path)
    return _read_token(path), str(path)


def _read_token(path: Path) -> str:
    try:
        text = path.read_text("ascii").strip()
    except PermissionError:
        raise CommandFailed(f"cannot read the admin token file {path}: permission denied "
                            "(run as the user Aegis runs as, or set AEGIS_ADMIN_TOKEN)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandFailed(f"cannot read the admin token file {path}: "
                            f"{getattr(exc, 'strerror', None) or exc}") from None
    if not text:
        raise CommandFailed(f"the admin token file {path} is empty")
    return text


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            raise CommandFailed(f"the server answered {self.status} with a body that is not "
                                "JSON") from None


def _error_text(response: Response) -> tuple[str, str | None]:
    """The API error's message (and its field), or a generic line for other bodies."""
    try:
        error = json.loads(response.body)["error"]
        message, code = str(error["message"]), error.get("code")
        field_name = error.get("field")
    except (ValueError, KeyError, TypeError):
        return f"the server answered HTTP {response.status}", None
    if field_name and str(field_name) not in message:
        message = f"{field_name}: {message}"
    return message, None if code is None else str(code)


class AdminClient:
    """One HTTPS connection to the admin API, reused for every request of a command."""

    def __init__(self, target: Target) -> None:
        self.target = target
        parts = urlsplit(target.base_url)
        if parts.scheme != "https" or not parts.hostname:
            raise CommandFailed(f"the admin URL must be https://HOST:PORT, not "
                                f"{target.base_url!r}", status=2)
        self._host = parts.hostname
        self._port = parts.port or 443
        self._prefix = parts.path.rstrip("/")
        self._context = self._tls_context(target.ca_file)
        self._connection: http.client.HTTPSConnection | None = None

    @staticmethod
    def _tls_context(ca_file: Path) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        try:
            context.load_verify_locations(cafile=str(ca_file))
        except FileNotFoundError:
            raise CommandFailed(f"no CA certificate at {ca_file}: give --ca-file or "
                                "--ssl-cache-dir (the server writes aegis-local-ca.crt "
                                "there on its first start)") from None
        except (OSError, ssl.SSLError) as exc:
            raise CommandFailed(f"cannot load the CA certificate {ca_file}: {exc}") from None
        return context

    def _connect(self) -> http.client.HTTPSConnection:
        if self._connection is None:
            self._connection = http.client.HTTPSConnection(
                self._host, self._port, timeout=TIMEOUT, context=self._context)
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def request(self, method: str, path: str, body: Any = None,
                authenticated: bool = True) -> Response:
        """Send one request; any HTTP status comes back, transport failures raise."""
        headers = {"Accept": "application/json"}
        if authenticated:
            if self.target.token is None:
                raise CommandFailed(
                    f"no admin token: set AEGIS_ADMIN_TOKEN, give --token-file, or run where "
                    f"{self.target.token_origin} is readable (the server writes it there when "
                    "it generates its token)")
            headers["Authorization"] = f"Bearer {self.target.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        while True:
            reused = self._connection is not None
            connection = self._connect()
            try:
                connection.request(method, self._prefix + path, body=data, headers=headers)
                answer = connection.getresponse()
                payload = answer.read()
            except (http.client.RemoteDisconnected, BrokenPipeError,
                    ConnectionResetError) as exc:
                self.close()
                if reused:
                    # The server closed an idle keep-alive connection before reading this
                    # request: send it once more on a new one. A fresh connection that
                    # fails is not retried, so a request is never sent twice after it
                    # may have been processed.
                    continue
                raise self._unreachable(exc) from None
            except ssl.SSLCertVerificationError as exc:
                self.close()
                raise CommandFailed(
                    f"the admin listener at {self.target.base_url} is not trusted by "
                    f"{self.target.ca_file}: {exc.verify_message}") from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise self._unreachable(exc) from None
            if answer.getheader("Connection", "").lower() == "close":
                self.close()
            return Response(answer.status, {k.lower(): v for k, v in answer.getheaders()},
                            payload)

    def _unreachable(self, exc: BaseException) -> CommandFailed:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return CommandFailed(f"cannot reach the admin API at {self.target.base_url}: "
                             f"{reason} (is Aegis running? see --admin-url)")

    def call(self, method: str, path: str, body: Any = None,
             authenticated: bool = True) -> Any:
        """Send a request and return its JSON (None for 204); an error status raises
        :class:`CommandFailed` with the API's message."""
        response = self.request(method, path, body, authenticated)
        if response.status >= 400:
            raise failure(response)
        if response.status == 204 or not response.body:
            return None
        return response.json()


def failure(response: Response) -> CommandFailed:
    message, code = _error_text(response)
    if response.status == 401:
        message = "the admin token was refused (401): check AEGIS_ADMIN_TOKEN or --token-file"
    return CommandFailed(message, http_status=response.status, code=code)
