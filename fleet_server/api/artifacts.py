"""Artifacts by sha256: content-addressed, so the sha256 is the ETag (not werkzeug's mtime one)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, send_file

from fleet_server import model_versions as registry
from fleet_server.api.auth import device_required, fleet

bp = Blueprint("artifacts", __name__, url_prefix="/api/v1")


@bp.get("/artifacts/<sha256>")
@device_required
def artifact(sha256: str) -> Any:
    path = registry.artifact_path(fleet(), sha256)
    resp = send_file(path, mimetype="application/x-tar", conditional=True, etag=sha256, max_age=31536000)
    resp.headers["Cache-Control"] = "private, max-age=31536000, immutable"
    return resp
