"""Retraining routes: labeled telemetry export, approval of a registered challenger, retrain jobs.

``edgefleet retrain`` (a separate process; the server never imports the compiler) reads
``/labeled``, uploads its challenger with provenance and starts or leaves the rollout.
"""

from __future__ import annotations

import math
import time
from typing import Any

from flask import Blueprint, jsonify, request

from fleet_server import provenance, validation
from fleet_server.api.auth import admin_required, fleet
from fleet_server.api.body import json_body
from fleet_server.errors import FleetError
from fleet_server.model_versions import get_version
from fleet_server.monitoring import labeled
from fleet_server.monitoring import retrain_trigger as retrain

bp = Blueprint("retraining", __name__, url_prefix="/api/v1")


def _arg(name: str, kind: Any = float) -> Any:
    raw = request.args.get(name)
    if raw is None:
        return None
    if kind is int:
        return validation.int_arg(raw, name)
    try:
        value = kind(raw)
    except ValueError:
        raise FleetError(f"{name}: expected {'an integer' if kind is int else 'a number'}, got {raw!r}") from None
    if kind is float and (not math.isfinite(value) or not 0 <= value <= 1e11):
        raise FleetError(f"{name}: expected unix seconds in [0, 1e11]")
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


@bp.post("/models/<name>/versions/<id:version>/approve")
@admin_required
def approve(name: str, version: int) -> Any:
    body = json_body(validation.APPROVE_REQUEST, optional=True)
    return jsonify(provenance.approve(fleet(), name, version, body)), 201


@bp.get("/models/<name>/retrains")
@admin_required
def retrain_jobs(name: str) -> Any:
    return jsonify({"model": name, "jobs": retrain.jobs(fleet(), name)})
