"""Device routes: enrollment, assignment (ETag), status and telemetry; admin listing."""

from __future__ import annotations

import hashlib
from typing import Any

from flask import Blueprint, Response, jsonify, request
from sqlalchemy import select

from edgefleet.bundle_format import canonical_json
from fleet_server import devices, ingest, validation
from fleet_server.api.auth import admin_required, device_required, fleet
from fleet_server.api.body import json_body
from fleet_server.db import Device
from fleet_server.errors import FleetError, NotFound

bp = Blueprint("devices", __name__, url_prefix="/api/v1")


@bp.post("/enrollment-tokens")
@admin_required
def new_token() -> Any:
    body = json_body(validation.ENROLLMENT_TOKEN_REQUEST, optional=True) or {}
    tok = devices.create_enrollment_token(fleet(), body.get("group", "default"), body.get("tags", []), body.get("ttl_seconds"))
    return jsonify({"token": tok}), 201


@bp.post("/devices/enroll")
def enroll() -> Any:
    body = json_body(validation.ENROLL_REQUEST)
    return jsonify(devices.enroll(fleet(), body["token"], body["device_id"], body.get("kind"))), 201


@bp.get("/devices")
@admin_required
def list_devices() -> Any:
    with fleet().session() as s:
        rows = s.scalars(select(Device).order_by(Device.device_id)).all()
    return jsonify({"devices": [devices.describe(d) for d in rows]})


@bp.get("/devices/<device_id>")
@admin_required
def show_device(device_id: str) -> Any:
    with fleet().session() as s:
        dev = s.get(Device, device_id)
        if dev is None:
            raise NotFound(f"device: {device_id} is not enrolled")
        out = devices.describe(dev)
    out["assignment"] = (devices.current_assignment(fleet(), device_id) or {}).get("assignment")
    return jsonify(out)


@bp.get("/devices/<device_id>/assignment")
@device_required
def assignment(device_id: str) -> Any:
    env = devices.current_assignment(fleet(), device_id)
    if env is None:
        raise NotFound(f"assignment: nothing is assigned to {device_id} yet")
    etag = '"' + hashlib.sha256(canonical_json(env)).hexdigest() + '"'
    if request.headers.get("If-None-Match") == etag:
        return Response(status=304, headers={"ETag": etag})
    resp = jsonify(env)
    resp.headers["ETag"] = etag
    return resp


@bp.post("/devices/<device_id>/status")
@device_required
def status(device_id: str) -> Any:
    devices.record_status(fleet(), device_id, json_body(validation.STATUS))
    return Response(status=204)


@bp.post("/devices/<device_id>/telemetry")
@device_required
def telemetry(device_id: str) -> Any:
    limit = fleet().cfg.max_telemetry_bytes
    if (request.content_length or 0) > limit:  # refuse before reading it; counted like any oversized batch
        exc = FleetError(f"body: {request.content_length} bytes is over the limit of {limit}")
        ingest.reject(fleet(), exc)
        raise exc
    accepted, dup = ingest.ingest(fleet(), device_id, request.get_data(cache=False))
    return jsonify({"accepted": accepted, "duplicates": dup})
