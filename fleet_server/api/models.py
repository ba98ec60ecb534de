"""Model registry routes: upload (with warnings when enrolled devices cannot run the bundle), list, get, trusted publisher keys."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request
from sqlalchemy import select

from fleet_server import model_versions as registry
from fleet_server import provenance, rollouts
from fleet_server.api.auth import admin_required, fleet
from fleet_server.db import ModelVersion

bp = Blueprint("models", __name__, url_prefix="/api/v1")


@bp.post("/models")
@admin_required
def upload() -> Any:
    prov = provenance.parse_header(request.headers.get(provenance.HEADER))
    row = registry.register(fleet(), request.get_data(cache=False), prov)
    warnings = rollouts.reach_warnings(fleet(), row.name, row.version, list(row.formats))
    return jsonify({**registry.describe(row), "warnings": warnings}), 201


@bp.get("/models")
@admin_required
def list_models() -> Any:
    with fleet().session() as s:
        rows = s.scalars(select(ModelVersion).order_by(ModelVersion.name, ModelVersion.version)).all()
    out: dict[str, Any] = {}
    for r in rows:
        out.setdefault(r.name, []).append(registry.describe(r))
    return jsonify({"models": [{"name": n, "latest": v[-1]["version"], "versions": v} for n, v in out.items()]})


@bp.get("/models/<name>")
@admin_required
def get_model(name: str) -> Any:
    row = registry.get_version(fleet(), name)
    return jsonify({**registry.describe(row, full=True), "provenance": provenance.view(fleet(), row)})


@bp.get("/models/<name>/versions/<id:version>")
@admin_required
def get_version(name: str, version: int) -> Any:
    row = registry.get_version(fleet(), name, version)
    return jsonify({**registry.describe(row, full=True), "provenance": provenance.view(fleet(), row)})


@bp.post("/keys")
@admin_required
def add_key() -> Any:
    return jsonify({"key_id": fleet().trust_key(request.get_data())}), 201
