"""Rollout routes: start, list, status, pause/resume/abort/rollback.

The start POST stores the rollout and answers. A rollout that can reach at most
``POST_INLINE_SMALL`` devices gets its first pass in the POST (its answer shows the first step
assigned, as before); a larger one is left to the server's reconciler thread, which the POST
wakes, and its answer shows no target yet (GET /api/v1/rollouts/<id> for progress). Time for
1,000 targets: bench/rollout.py.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify

from fleet_server import rollouts, validation
from fleet_server.api.auth import admin_required, fleet
from fleet_server.api.body import json_body

bp = Blueprint("rollouts", __name__, url_prefix="/api/v1")
POST_INLINE_SMALL = 20  # a rollout that can reach at most this many devices is reconciled by the POST itself (~5 ms each)


@bp.post("/rollouts")
@admin_required
def start() -> Any:
    body = json_body(validation.ROLLOUT_REQUEST)
    version = body.get("version")
    if version is None:
        from fleet_server.model_versions import get_version

        version = get_version(fleet(), body["model"]).version
    reconciler = current_app.extensions.get("edgefleet.reconciler")
    r = rollouts.start(fleet(), body["model"], version, selector=body.get("selector"), steps=body.get("steps"), gates=body.get("gates"),
                       reconcile_now=reconciler is None)
    if reconciler is not None:  # a served app: the reconciler thread signs, stores and publishes (the rest of) the step
        if rollouts.target_bound(fleet(), body.get("selector")) <= POST_INLINE_SMALL:
            rollouts.reconcile(fleet(), rollout_id=r.id, max_assignments=POST_INLINE_SMALL)
        reconciler.wake.set()
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
