"""Provenance of a model version: what the uploader recorded, plus the rollouts that shipped it.

An upload may carry ``X-Edgefleet-Provenance: <JSON object>`` (``edgefleet retrain`` sends the
triggering alert, data window, parent version, champion and challenger metrics, trainer and row
counts). It is stored in ``ModelVersion.provenance``. With ``"approval_required": true`` the
server adds ``"approval": {"state": "pending"}``: the version is registered, and
``POST /api/v1/models/<name>/versions/<v>/approve`` starts its rollout (the ``rollout_request``
the uploader stored, or the body's ``steps``/``gates``/``selector``) and records who started it.

``view`` is what the API shows: the stored object with ``rollouts``, every rollout of the
version read live from the rollouts table (id, state, reason, steps, times), so halts and
rollbacks appear without anyone writing them back.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from fleet_server import rollouts
from fleet_server.core import Fleet
from fleet_server.db import ModelVersion, Rollout, utcnow
from fleet_server.errors import Conflict, FleetError, NotFound

HEADER = "X-Edgefleet-Provenance"
MAX_BYTES = 64 * 1024


def parse_header(raw: str | None) -> dict[str, Any] | None:
    if raw is None or raw == "":
        return None
    if len(raw) > MAX_BYTES:
        raise FleetError(f"{HEADER}: {len(raw)} bytes is over the limit of {MAX_BYTES}")
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise FleetError(f"{HEADER}: not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise FleetError(f"{HEADER}: expected a JSON object")
    if value.get("approval_required") is True:
        value["approval"] = {"state": "pending"}
    else:
        value.pop("approval", None)  # only the server writes the approval state
    return value


def rollout_history(s: Any, name: str, version: int) -> list[dict[str, Any]]:
    out = []
    for r in s.scalars(select(Rollout).where(Rollout.model == name, Rollout.version == version).order_by(Rollout.id)):
        out.append({"id": r.id, "state": r.state, "reason": r.reason, "steps": r.steps, "gates": r.gates,
                    "created_at": r.created_at.isoformat() + "Z", "updated_at": r.updated_at.isoformat() + "Z",
                    "events": [e["event"] for e in r.history]})
    return out


def view(fleet: Fleet, row: ModelVersion) -> dict[str, Any]:
    with fleet.session() as s:
        return {**(row.provenance or {}), "rollouts": rollout_history(s, row.name, row.version)}


def approve(fleet: Fleet, name: str, version: int, body: dict[str, Any] | None) -> dict[str, Any]:
    """Start the rollout of a version registered with ``approval_required``; returns its status."""
    body = body or {}
    with fleet.session() as s:
        mv = s.scalars(select(ModelVersion).where(ModelVersion.name == name, ModelVersion.version == version)).first()
        if mv is None:
            raise NotFound(f"model: no {name} v{version} is registered")
        prov = dict(mv.provenance or {})
        state = (prov.get("approval") or {}).get("state")
        if state != "pending":
            raise Conflict(f"approval: {name} v{version} is not waiting for approval (approval state: {state or 'none'})")
        request = {**(prov.get("rollout_request") or {}), **{k: body[k] for k in ("steps", "gates", "selector") if k in body}}
    r = rollouts.start(fleet, name, version, selector=request.get("selector"), steps=request.get("steps"), gates=request.get("gates"),
                       approved=True)
    with fleet.session() as s:
        mv = s.scalars(select(ModelVersion).where(ModelVersion.name == name, ModelVersion.version == version)).one()
        prov = dict(mv.provenance or {})
        prov["approval"] = {"state": "approved", "at": utcnow().isoformat() + "Z", "rollout_id": r.id,
                            "by": str(body.get("by") or "admin")}
        mv.provenance = prov  # a new object, so the JSON column is written
    return rollouts.status(fleet, r.id)
