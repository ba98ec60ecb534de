"""Artifacts by sha256: content-addressed, so the sha256 is the ETag (not werkzeug's mtime one).

A plain GET (no ``Range``, ``If-*`` header), which is what every device sends during a rollout,
takes a short path: the file is handed to the WSGI server's file wrapper with the headers
``send_file`` would set, without werkzeug's conditional machinery (about half of a request's
cost at 10,000 downloads per rollout). Any conditional or range request goes through
``send_file(conditional=True)`` as before, so 304, 206, If-Range and 416 answers are unchanged.
Either way the caller is the admin or a device whose credential is checked on this very request
(``device_required``: one indexed query, nothing cached).
"""

from __future__ import annotations

import os
import time
from typing import Any

from flask import Blueprint, Response, request, send_file
from werkzeug.http import http_date
from werkzeug.wsgi import wrap_file

from fleet_server import model_versions as registry
from fleet_server.api.auth import device_required, fleet

bp = Blueprint("artifacts", __name__, url_prefix="/api/v1")
MAX_AGE = 31536000
CACHE_CONTROL = f"private, max-age={MAX_AGE}, immutable"
CONDITIONAL = ("Range", "If-Range", "If-None-Match", "If-Match", "If-Modified-Since", "If-Unmodified-Since")


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
