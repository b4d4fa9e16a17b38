"""The admin web UI: three static files (``ui/``) served beside the API.

The UI is a thin client of ``/api/v1``: it holds the admin token in the browser tab's
``sessionStorage`` and sends it as a bearer token, so the files themselves are public.
They are still behind the Host guard (DNS rebinding) and served with a strict Content
Security Policy: scripts only from this origin, no inline code, no framing.
"""

from __future__ import annotations

from importlib import resources

from klein import Klein
from twisted.web.iweb import IRequest

from aegis.admin._errors import ApiError
from aegis.admin._guards import AdminAddress, check_host_and_origin

FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}

UI_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


def _read(name: str) -> bytes:
    return resources.files("aegis.admin").joinpath("ui", name).read_bytes()


def serve(request: IRequest, address: AdminAddress, name: str) -> bytes:
    """One UI file, or a plain 404 for any other name (no file-system path is ever built
    from the request)."""
    try:
        check_host_and_origin(request, address)
    except ApiError as error:
        request.setResponseCode(error.status)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return error.message.encode("utf-8") + b"\n"
    content_type = FILES.get(name)
    if content_type is None:
        request.setResponseCode(404)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"Not Found\n"
    for header, value in {**UI_HEADERS, "Content-Type": content_type}.items():
        request.setHeader(header.encode("ascii"), value.encode("ascii"))
    return _read(name)


def register(app: Klein) -> None:
    """Add ``/`` and ``/ui/<file>`` to the admin Klein app (GET only)."""

    @app.route("/", methods=["GET"], endpoint="ui_index")
    def index(self: object, request: IRequest) -> bytes:
        return serve(request, self._address, "index.html")  # type: ignore[attr-defined]

    @app.route("/ui/<string:name>", methods=["GET"], endpoint="ui_file")
    def asset(self: object, request: IRequest, name: str) -> bytes:
        return serve(request, self._address, name)  # type: ignore[attr-defined]
