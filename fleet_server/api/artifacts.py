"""Artifacts by sha256: content-addressed, so the sha256 is the ETag (not werkzeug's mtime one).

A plain GET (no ``Range``, ``If-*`` header), which is what every device sends during a rollout,
takes a short path: the file is handed to the WSGI server's file wrapper with the headers
``send_file`` would set, without werkzeug's conditional machinery (about half of a request's
cost at 10,000 downloads per rollout). Any conditional or range request goes through
``send_file(conditional=True)`` as before, so 304, 206, If-Range and 416 answers are unchanged.
Either way the caller is the admin or a device whose credential is checked on this very request
(``device_required``: one indexed query, nothing cached).

``PlainArtifactGets`` (installed on the app's ``wsgi_app`` when this blueprint is registered)
answers that plain GET of a device before Flask sees it: Flask's request context, routing and
response objects were most of the rest of a download's server CPU in bench/rollout.py. It checks
the device's credential with the same one indexed query on every request (nothing cached, so a
revoked device is refused on its very next GET) and sends the same headers as ``_plain``. The
archive bytes are kept in memory by sha256 (content-addressed: a name never changes content),
and each request still stats the file, so an artifact removed from disk is a 404 at once.
Anything else (the admin, a bad or missing token, a query string, a conditional or range
header, an unknown sha256) goes to Flask unchanged, so every error answer is Flask's.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from flask import Blueprint, Response, request, send_file
from werkzeug.http import http_date
from werkzeug.wsgi import wrap_file

from fleet_server import model_versions as registry
from fleet_server.api.auth import device_required, fleet
from fleet_server.core import Fleet
from fleet_server.devices import authenticate_id
from fleet_server.errors import Unauthorized

bp = Blueprint("artifacts", __name__, url_prefix="/api/v1")
MAX_AGE = 31536000
CACHE_CONTROL = f"private, max-age={MAX_AGE}, immutable"
CONDITIONAL = ("Range", "If-Range", "If-None-Match", "If-Match", "If-Modified-Since", "If-Unmodified-Since")
PREFIX = "/api/v1/artifacts/"
CACHE_FILE_BYTES = 16 << 20  # archives up to this size are kept in memory; bigger ones are streamed from disk
CACHE_TOTAL_BYTES = 128 << 20
_HEX = frozenset("0123456789abcdef")
_CONDITIONAL_ENV = tuple("HTTP_" + h.upper().replace("-", "_") for h in CONDITIONAL)


@bp.get("/artifacts/<sha256>")
@device_required
def artifact(sha256: str) -> Any:
    path = registry.artifact_path(fleet(), sha256)
    if not any(h in request.headers for h in CONDITIONAL):
        return _plain(path, sha256)
    resp = send_file(path, mimetype="application/x-tar", conditional=True, etag=sha256, max_age=MAX_AGE)
    resp.headers["Cache-Control"] = CACHE_CONTROL
    return resp


def _plain(path: Any, sha256: str) -> Response:
    """The 200 answer ``send_file(conditional=True)`` gives a request without conditions."""
    fh = open(path, "rb")  # noqa: SIM115 - closed by the WSGI server when the body is sent
    try:
        st = os.fstat(fh.fileno())
        resp = Response(wrap_file(request.environ, fh), mimetype="application/x-tar", direct_passthrough=True, headers={
            "Content-Length": str(st.st_size), "ETag": f'"{sha256}"', "Accept-Ranges": "bytes",
            "Last-Modified": http_date(st.st_mtime), "Expires": http_date(time.time() + MAX_AGE),
            "Cache-Control": CACHE_CONTROL, "Content-Disposition": f"inline; filename={sha256}.tar",
        })
    except BaseException:
        fh.close()
        raise
    return resp


class PlainArtifactGets:
    """WSGI wrapper: a device's plain artifact GET answered without Flask (see the module docstring)."""

    def __init__(self, fleet_: Fleet, wsgi_app: Callable[..., Iterable[bytes]]) -> None:
        self.fleet, self.wsgi_app = fleet_, wsgi_app
        self._cache: dict[str, tuple[int, float, bytes]] = {}  # sha256 -> (size, mtime, bytes)
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if (environ.get("REQUEST_METHOD") != "GET" or not path.startswith(PREFIX) or environ.get("QUERY_STRING")
                or any(h in environ for h in _CONDITIONAL_ENV)):
            return self.wsgi_app(environ, start_response)
        sha, auth = path[len(PREFIX):], environ.get("HTTP_AUTHORIZATION", "")
        if len(sha) != 64 or not _HEX.issuperset(sha) or auth[:7].lower() != "bearer ":
            return self.wsgi_app(environ, start_response)
        token = auth[7:].strip()
        if not token.startswith("dev_"):
            return self.wsgi_app(environ, start_response)  # the admin token, or not a device credential
        try:
            authenticate_id(self.fleet, token)  # on every request: a revoked credential is refused at once
        except Unauthorized:
            return self.wsgi_app(environ, start_response)  # Flask checks again and words the refusal
        file = Path(self.fleet.artifacts_dir) / f"{sha}.tar"
        try:
            st = os.stat(file)
        except OSError:
            return self.wsgi_app(environ, start_response)  # Flask's 404
        body = self._bytes(sha, file, st)
        headers = [("Content-Type", "application/x-tar"), ("Content-Length", str(st.st_size)), ("ETag", f'"{sha}"'),
                   ("Accept-Ranges", "bytes"), ("Last-Modified", http_date(st.st_mtime)), ("Expires", http_date(time.time() + MAX_AGE)),
                   ("Cache-Control", CACHE_CONTROL), ("Content-Disposition", f"inline; filename={sha}.tar")]
        start_response("200 OK", headers)
        if body is not None:
            return [body]
        fh = open(file, "rb")  # noqa: SIM115 - closed by the WSGI server when the body is sent
        wrapper = environ.get("wsgi.file_wrapper")
        return wrapper(fh, 1 << 16) if wrapper is not None else _chunks(fh)

    def _bytes(self, sha: str, file: Path, st: os.stat_result) -> bytes | None:
        hit = self._cache.get(sha)
        if hit is not None and hit[0] == st.st_size and hit[1] == st.st_mtime:
            return hit[2]
        if st.st_size > CACHE_FILE_BYTES:
            return None
        data = file.read_bytes()
        if len(data) != st.st_size:
            return None  # being replaced under us: stream this one, cache it next time
        with self._lock:
            while self._cache and sum(len(v[2]) for v in self._cache.values()) + len(data) > CACHE_TOTAL_BYTES:
                self._cache.pop(next(iter(self._cache)))  # oldest first
            self._cache[sha] = (st.st_size, st.st_mtime, data)
        return data


def _chunks(fh: Any) -> Iterable[bytes]:
    with fh:
        while chunk := fh.read(1 << 16):
            yield chunk


@bp.record_once
def _install_plain_gets(state: Any) -> None:
    state.app.wsgi_app = PlainArtifactGets(state.app.extensions["edgefleet"], state.app.wsgi_app)
