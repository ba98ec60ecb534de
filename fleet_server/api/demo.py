"""The browser demo at /demo: the page, the JS runtime, its vendor files and a read-only bundle.

Everything is same-origin, as onnxruntime-web needs for its wasm (``ort.env.wasm.wasmPaths``)
and a service worker needs for offline use:

    /demo/                         web_demo/index.html (and the page's other files by name)
    /demo/runtime/<file>.mjs       runtimes/js
    /demo/vendor/ort|tfjs/<file>   the few node_modules dist files the page loads
    /demo/bundle/current.json      newest registered model with onnx or tfjs (or ``?model=&version=``):
                                   name, version, base URL, parity, and the trusted publisher keys;
                                   404 naming the command to run when nothing is published yet
    /demo/bundle/models.json       every model and version the page can run, newest first (its picker)
    /demo/bundle/<name>/<v>/...    manifest.json, signature, artifacts/* of that version
    /demo/telemetry                POST a protocol telemetry batch (kept in memory, never in
                                   the fleet's tables); GET what arrived

The bundle routes need no token: they are read-only and serve what a device could download, so
the page verifies the signature and hashes itself, like any device. They live outside /api/v1
(the OpenAPI document describes the device and admin API only). The page pins the publisher
keys it first saw (trust on first use); a real deployment ships them inside the app instead.
"""

from __future__ import annotations

import collections
import threading
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy import select

from edgefleet.bundle_format import Bundle, open_bundle
from fleet_server import ingest, validation
from fleet_server import model_versions as registry
from fleet_server.api.auth import fleet
from fleet_server.api.static import checkout_or_built, node_modules, send_static, serve_page_dir
from fleet_server.db import ModelVersion
from fleet_server.errors import FleetError, NotFound

bp = Blueprint("demo", __name__, url_prefix="/demo")

PAGE_DIR = checkout_or_built("demo", "web_demo")
RUNTIME_DIR = checkout_or_built("runtime", "runtimes/js")
BROWSER_FORMATS = ("onnx", "tfjs")
VENDOR = {  # the only node_modules files served: name -> path under node_modules
    "ort": {f: f"onnxruntime-web/dist/{f}" for f in ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")},
    "tfjs": {"tf.fesm.min.js": "@tensorflow/tfjs/dist/tf.fesm.min.js"},
}
serve_page_dir(bp, PAGE_DIR, "demo")


@bp.get("/runtime/<name>")
def runtime_file(name: str) -> Any:
    if not name.endswith(".mjs") or name.startswith(".") or not (RUNTIME_DIR / name).is_file():
        raise NotFound(f"demo: no runtime module {name}")
    return send_static(RUNTIME_DIR / name, "demo")


@bp.get("/vendor/<lib>/<name>")
def vendor_file(lib: str, name: str) -> Any:
    rel = VENDOR.get(lib, {}).get(name)
    if rel is None:
        raise NotFound(f"demo: {lib}/{name} is not a served vendor file")
    return send_static(node_modules() / rel, "demo", immutable=True)


NO_MODEL = ("model: no registered model has an onnx or tfjs artifact: no model published yet; run "
            "`edgefleet publish build/churn-v1.tar` (a bundle compiled with --targets onnx or tfjs)")


def _browser_rows() -> list[ModelVersion]:
    """Every version the page can run (an onnx or tfjs artifact), newest upload first."""
    with fleet().session() as s:
        q = select(ModelVersion).order_by(ModelVersion.uploaded_at.desc(), ModelVersion.id.desc())
        return [row for row in s.scalars(q) if any(f in BROWSER_FORMATS for f in row.formats)]


def _choose(name: str | None, version: int | None) -> ModelVersion:
    rows = _browser_rows()
    if not rows:
        raise NotFound(NO_MODEL)
    for row in rows:
        if (not name or row.name == name) and (version is None or row.version == version):
            return row
    wanted = f"{name or 'any model'}" + (f" v{version}" if version is not None else "")
    raise NotFound(f"model: {wanted} has no onnx or tfjs artifact here; the page can run "
                   + ", ".join(sorted({f"{r.name} v{r.version}" for r in rows}))[:400])


@bp.get("/bundle/models.json")
def models() -> Any:
    out: dict[str, list[dict[str, Any]]] = {}
    for row in _browser_rows():
        out.setdefault(row.name, []).append({"version": row.version, "formats": [f for f in row.formats if f in BROWSER_FORMATS],
                                             "uploaded_at": row.uploaded_at.isoformat() + "Z"})
    resp = jsonify({"models": [{"name": n, "versions": v} for n, v in out.items()]})
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.get("/bundle/current.json")
def current() -> Any:
    name = request.args.get("model") or None
    if name is not None and len(name) > validation.MAX_NAME_CHARS:
        raise FleetError(f"model: at most {validation.MAX_NAME_CHARS} characters")
    row = _choose(name, validation.int_arg(request.args.get("version"), "version"))
    m = row.manifest
    trusted = [p.read_text() for p in sorted(fleet().trusted_dir.glob("*.pem"))]
    resp = jsonify({
        "name": row.name, "version": row.version, "base": f"bundle/{row.name}/{row.version}/", "key_id": row.key_id,
        "formats": [f for f in row.formats if f in BROWSER_FORMATS], "created_at": m.get("created_at"),
        "trusted_keys": trusted, "parity": m.get("parity", []), "metrics": m.get("reference", {}).get("metrics", {}),
    })
    resp.headers["Cache-Control"] = "no-store"
    return resp


_bundles: dict[str, Bundle] = {}
_bundles_lock = threading.Lock()


def _bundle(name: str, version: int) -> Bundle:
    row = registry.get_version(fleet(), name, version)
    with _bundles_lock:
        if row.sha256 not in _bundles:
            if len(_bundles) > 8:
                _bundles.clear()
            _bundles[row.sha256] = open_bundle(registry.artifact_path(fleet(), row.sha256))
        return _bundles[row.sha256]


@bp.get("/bundle/<name>/<id:version>/<path:member>")
def bundle_file(name: str, version: int, member: str) -> Any:
    bundle = _bundle(name, version)
    if member not in ("manifest.json", "signature") and not member.startswith("artifacts/"):
        raise NotFound(f"bundle: {member} is not part of a bundle")
    if member not in bundle.files:
        raise NotFound(f"bundle: {name} v{version} has no {member}")
    return Response(bundle.files[member], mimetype="application/json" if member.endswith(".json") else "application/octet-stream",
                    headers={"Cache-Control": "no-cache"})


class _Sink:
    """The demo's telemetry: validated like the real ingest, kept in memory, deduplicated by id."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ids: set[str] = set()
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=50)
        self.duplicates = 0


def _sink() -> _Sink:
    return current_app.extensions.setdefault("edgefleet.demo_sink", _Sink())  # type: ignore[no-any-return]


@bp.post("/telemetry")
def telemetry_in() -> Any:
    raw = request.get_data(cache=False)
    limit = fleet().cfg.max_telemetry_bytes
    if len(raw) > limit:
        raise FleetError(f"body: {len(raw)} bytes is over the limit of {limit}")
    body = validation.parse_json(raw)  # bounded depth, no NaN or lone surrogates (request.get_json has neither guard)
    device_id = (body.get("device_id") or "web-demo") if isinstance(body, dict) else "web-demo"
    if not isinstance(device_id, str):
        raise FleetError("device_id: expected a string")
    rows = ingest.parse_batch(fleet(), device_id, body)
    sink = _sink()
    with sink.lock:
        if len(sink.ids) > 100_000:  # a demo, not storage: forget old ids rather than grow
            sink.ids.clear()
        fresh = [r for r in rows if r["id"] not in sink.ids]
        sink.ids.update(r["id"] for r in fresh)
        sink.duplicates += len(rows) - len(fresh)
        sink.recent.extend({k: r[k] for k in ("id", "device_id", "kind", "created", "model", "model_version", "score", "label")} for r in fresh)
    return jsonify({"accepted": len(fresh), "duplicates": len(rows) - len(fresh)})


@bp.get("/telemetry")
def telemetry_out() -> Any:
    sink = _sink()
    with sink.lock:
        return jsonify({"received": len(sink.ids), "duplicates": sink.duplicates, "recent": list(sink.recent)[-20:]})
