"""The operator dashboard at /dashboard: a static page that plots what the admin API reports.

    /dashboard/                    web_dashboard/index.html (and the page's other files by name)
    /dashboard/vendor/chart.umd.min.js   Chart.js from node_modules (pinned in package.json)

The page holds no data of its own and the server renders nothing into it: the browser asks the
admin API (devices, rollouts, models, drift, performance, alerts) with the admin bearer token,
which the operator types once (kept in ``sessionStorage``, so it dies with the tab) or passes in
the URL fragment (``/dashboard/#token=...``; a fragment never reaches the server or its logs).
So these routes need no token: they serve the same files to everyone, like /demo's page, and
live outside /api/v1 (the OpenAPI document describes the device and admin API only).
Everything is same-origin; nothing comes from a CDN.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Blueprint, redirect, request, send_file

from fleet_server.api.demo import MIME, ROOT, node_modules
from fleet_server.errors import NotFound

bp = Blueprint("dashboard", __name__, url_prefix="/dashboard")

PAGE_DIR = ROOT / "web_dashboard"
VENDOR = {"chart.umd.min.js": "chart.js/dist/chart.umd.min.js"}  # the only node_modules files served


def _file(path: Path, *, immutable: bool = False) -> Any:
    if not path.is_file():
        hint = " (run `make` to install the npm packages)" if "node_modules" in path.parts else ""
        raise NotFound(f"dashboard: {path.name} is not here{hint}")
    resp = send_file(path, mimetype=MIME.get(path.suffix, "application/octet-stream"), conditional=True, max_age=0)
    resp.headers["Cache-Control"] = "public, max-age=86400" if immutable else "no-cache"
    # the page talks to its own origin only; the token must not leak through a referrer either
    resp.headers["Content-Security-Policy"] = "default-src 'self'; img-src 'self' data:; style-src 'self'; base-uri 'none'; frame-ancestors 'none'"
    resp.headers["Referrer-Policy"] = "no-referrer"
    return resp


@bp.get("")
def root() -> Any:
    return redirect(request.path + "/", code=308)


@bp.get("/")
def page() -> Any:
    return _file(PAGE_DIR / "index.html")


@bp.get("/<name>")
def page_file(name: str) -> Any:
    if name.startswith(".") or not (PAGE_DIR / name).is_file():
        raise NotFound(f"dashboard: no page file {name}")
    return _file(PAGE_DIR / name)


@bp.get("/vendor/<name>")
def vendor_file(name: str) -> Any:
    rel = VENDOR.get(name)
    if rel is None:
        raise NotFound(f"dashboard: {name} is not a served vendor file")
    return _file(node_modules() / rel, immutable=True)
