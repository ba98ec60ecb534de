"""Rollout routes: start, list, status, pause/resume/abort/rollback."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from fleet_server import rollouts, validation
from fleet_server.api.auth import admin_required, fleet
from fleet_server.api.body import json_body

bp = Blueprint("rollouts", __name__, url_prefix="/api/v1")


@bp.post("/rollouts")
@admin_required
def start() -> Any:
    body = json_body(validation.ROLLOUT_REQUEST)
    version = body.get("version")
    if version is None:
        from fleet_server.model_versions import get_version

        version = get_version(fleet(), body["model"]).version
    r = rollouts.start(fleet(), body["model"], version, selector=body.get("selector"), steps=body.get("steps"), gates=body.get("gates"))
    return jsonify(rollouts.status(fleet(), r.id)), 201


@bp.get("/rollouts")
@admin_required
def list_rollouts() -> Any:
    return jsonify({"rollouts": rollouts.list_all(fleet())})


@bp.get("/rollouts/<id:rollout_id>")
@admin_required
def get(rollout_id: int) -> Any:
    return jsonify(rollouts.status(fleet(), rollout_id))


@bp.post("/rollouts/<id:rollout_id>/<action>")
@admin_required
def control(rollout_id: int, action: str) -> Any:
    rollouts.control(fleet(), rollout_id, action)
    return jsonify(rollouts.status(fleet(), rollout_id))
