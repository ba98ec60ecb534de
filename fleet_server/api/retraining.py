"""Retraining routes: labeled telemetry export, approval of a registered challenger, retrain jobs.

``edgefleet retrain`` (a separate process; the server never imports the compiler) reads
``/labeled``, uploads its challenger with provenance and starts or leaves the rollout.
"""

from __future__ import annotations

import math
import time
from typing import Any

from flask import Blueprint, jsonify, request

from fleet_server import provenance
from fleet_server.api.auth import admin_required, fleet
from fleet_server.errors import FleetError
from fleet_server.monitoring import labeled, retrain
from fleet_server.registry import get_version

bp = Blueprint("retraining", __name__, url_prefix="/api/v1")


def _arg(name: str, kind: Any = float) -> Any:
    raw = request.args.get(name)
    if raw in (None, ""):
        return None
    try:
        value = kind(raw)
    except ValueError:
        raise FleetError(f"{name}: expected {'an integer' if kind is int else 'a number'}, got {raw!r}") from None
    if kind is float and not math.isfinite(value):
        raise FleetError(f"{name}: expected a finite number")
    return value


@bp.get("/models/<name>/labeled")
@admin_required
def labeled_export(name: str) -> Any:
    get_version(fleet(), name)
    end = _arg("end")
    start = _arg("start")
    if start is None:
        start = (end or time.time()) - 30 * 86_400.0
    limit = _arg("limit", int) or labeled.DEFAULT_LIMIT
    if limit < 1:
        raise FleetError("limit: must be at least 1")
    with fleet().session() as s:
        return jsonify(labeled.labeled_rows(s, name, start=start, end=end, version=_arg("version", int), limit=limit))


@bp.post("/models/<name>/versions/<int:version>/approve")
@admin_required
def approve(name: str, version: int) -> Any:
    body = request.get_json(silent=True)
    if body is not None and not isinstance(body, dict):
        raise FleetError("body: expected a JSON object (optional steps, gates, selector, by)")
    return jsonify(provenance.approve(fleet(), name, version, body)), 201


@bp.get("/models/<name>/retrains")
@admin_required
def retrain_jobs(name: str) -> Any:
    return jsonify({"model": name, "jobs": retrain.jobs(fleet(), name)})
