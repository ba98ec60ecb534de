"""The operator dashboard at /dashboard: a static page that plots what the admin API reports.

    /dashboard/                    fleet_server/pages/dashboard/index.html (and the page's other files by name)
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

from typing import Any

from flask import Blueprint

from fleet_server.api.static import PACKAGE, node_modules, send_static, serve_page_dir
from fleet_server.errors import NotFound

bp = Blueprint("dashboard", __name__, url_prefix="/dashboard")

PAGE_DIR = PACKAGE / "pages" / "dashboard"  # package data: ships in the wheel
VENDOR = {"chart.umd.min.js": "chart.js/dist/chart.umd.min.js"}  # the only node_modules files served
# the page talks to its own origin only; the token must not leak through a referrer either
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; base-uri 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}
serve_page_dir(bp, PAGE_DIR, "dashboard", HEADERS)


@bp.get("/vendor/<name>")
def vendor_file(name: str) -> Any:
    rel = VENDOR.get(name)
    if rel is None:
        raise NotFound(f"dashboard: {name} is not a served vendor file")
    return send_static(node_modules() / rel, "dashboard", immutable=True, headers=HEADERS)
