"""Same-origin static pages (/demo, /dashboard): one way to serve a page folder and vendor files.

A page folder is served at ``<prefix>/`` (``index.html``) and ``<prefix>/<file>``; vendor files
come from ``node_modules`` (``make`` runs ``npm ci``), never from a CDN. Every page route serves
the same bytes to everyone and needs no token: the pages call the API themselves.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flask import Blueprint, redirect, request, send_file

from fleet_server.errors import NotFound

PACKAGE = Path(__file__).resolve().parents[1]  # fleet_server/
ROOT = PACKAGE.parent  # the checkout, in an editable install
BUILT = PACKAGE / "_static"  # a wheel's copy of web_demo/, runtimes/js and the vendor files (setup.py build_py)
MIME = {".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm", ".html": "text/html",
        ".css": "text/css", ".json": "application/json", ".svg": "image/svg+xml", ".png": "image/png",
        ".webmanifest": "application/manifest+json"}


def checkout_or_built(built: str, checkout: str) -> Path:
    """``_static/<built>`` in an installed wheel, else ``<checkout>`` of the repository."""
    return BUILT / built if (BUILT / built).is_dir() else ROOT / checkout


def node_modules() -> Path:
    """$EDGEFLEET_NODE_ROOT/node_modules, else the wheel's vendor copy, else the repository's (``make`` runs ``npm ci``)."""
    env = os.environ.get("EDGEFLEET_NODE_ROOT")
    if env:
        return Path(env) / "node_modules"
    return BUILT / "vendor" if (BUILT / "vendor").is_dir() else ROOT / "node_modules"


def send_static(path: Path, label: str, *, immutable: bool = False, headers: dict[str, str] | None = None) -> Any:
    if not path.is_file():
        if "node_modules" in path.parts:
            hint = " (run `make` to install the npm packages)"
        elif BUILT in path.parents:
            hint = " (this installed package was built without it: rebuild the wheel from a checkout with node_modules)"
        else:
            hint = ""
        raise NotFound(f"{label}: {path.name} is not here{hint}")
    resp = send_file(path, mimetype=MIME.get(path.suffix, "application/octet-stream"), conditional=True, max_age=0)
    resp.headers["Cache-Control"] = "public, max-age=86400" if immutable else "no-cache"
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def serve_page_dir(bp: Blueprint, page_dir: Path, label: str, headers: dict[str, str] | None = None) -> None:
    """Register ``""`` (redirect), ``"/"`` and ``"/<name>"`` on ``bp`` for the files of ``page_dir``."""

    @bp.get("")
    def root() -> Any:
        return redirect(request.path + "/", code=308)

    @bp.get("/")
    def page() -> Any:
        return send_static(page_dir / "index.html", label, headers=headers)

    @bp.get("/<name>")
    def page_file(name: str) -> Any:
        if name.startswith(".") or not (page_dir / name).is_file():
            raise NotFound(f"{label}: no page file {name}")
        return send_static(page_dir / name, label, headers=headers)
