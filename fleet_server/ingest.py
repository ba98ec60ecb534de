"""Telemetry ingest: validate, then insert in batches, idempotent by message id.

The same function serves the HTTP batch POST and the MQTT bridge. A malformed or oversized
payload is rejected with a reason and counted (``telemetry_rejected``, ``telemetry_oversized``);
it never raises into the bridge's loop. Duplicates (a redelivery after a lost PUBACK) are
skipped by the primary key and counted as ``telemetry_duplicates``.
"""

from __future__ import annotations

import json
import math
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from fleet_server.core import Fleet
from fleet_server.db import TelemetryRecord, utcnow
from fleet_server.errors import FleetError

KINDS = {"prediction", "sketch", "outcome"}
MAX_MESSAGES = 5000


def _row(device_id: str, msg: Any, i: int) -> dict[str, Any]:
    if not isinstance(msg, dict):
        raise FleetError(f"messages[{i}]: expected an object")
    mid, kind, created, body = msg.get("id"), msg.get("kind"), msg.get("created"), msg.get("body")
    if not isinstance(mid, str) or not 0 < len(mid) <= 64:
        raise FleetError(f"messages[{i}].id: expected a string of 1-64 characters")
    if kind not in KINDS:
        raise FleetError(f"messages[{i}].kind: {kind!r} is not one of {sorted(KINDS)}")
    if not isinstance(created, (int, float)) or isinstance(created, bool) or not math.isfinite(created):
        raise FleetError(f"messages[{i}].created: expected a finite number (unix seconds)")
    if not isinstance(body, dict):
        raise FleetError(f"messages[{i}].body: expected an object")
    version = body.get("model_version")
    score = body.get("score")
    label = body.get("label")
    return {
        "id": mid, "device_id": device_id, "kind": kind, "created": float(created), "received_at": utcnow(),
        "model": str(body["model"])[:128] if body.get("model") is not None else None,
        "model_version": version if isinstance(version, int) and not isinstance(version, bool) else None,
        "entity_id": str(body["entity_id"])[:256] if body.get("entity_id") is not None else None,
        "score": float(score) if isinstance(score, (int, float)) and not isinstance(score, bool) and math.isfinite(score) else None,
        "label": str(label)[:64] if label is not None else None,
        "body": body,
    }


def parse_batch(fleet: Fleet, device_id: str, raw: bytes | Any) -> list[dict[str, Any]]:
    if isinstance(raw, (bytes, bytearray)):
        if len(raw) > fleet.cfg.max_telemetry_bytes:
            raise FleetError(f"body: {len(raw)} bytes is over the limit of {fleet.cfg.max_telemetry_bytes}")
        try:
            raw = json.loads(raw)
        except (UnicodeDecodeError, ValueError) as exc:
            raise FleetError(f"body: not JSON ({exc})") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("messages"), list):
        raise FleetError("messages: expected {\"device_id\": ..., \"messages\": [...]}")
    if raw.get("device_id") not in (None, device_id):
        raise FleetError(f"device_id: batch says {raw.get('device_id')!r} but was sent by {device_id!r}")
    msgs = raw["messages"]
    if len(msgs) > MAX_MESSAGES:
        raise FleetError(f"messages: {len(msgs)} messages in one batch, the limit is {MAX_MESSAGES}")
    return [_row(device_id, m, i) for i, m in enumerate(msgs)]


def insert_rows(fleet: Fleet, rows: list[dict[str, Any]], session: Any = None) -> tuple[int, int]:
    """Insert, skipping ids already stored; returns (accepted, duplicates).

    With ``session`` the rows join the caller's transaction (the MQTT bridge commits many
    batches at once and acknowledges them only after that commit).
    """
    if session is None:
        with fleet.session() as s:
            return insert_rows(fleet, rows, s)
    if not rows:
        return 0, 0
    s = session
    unique = list({r["id"]: r for r in rows}.values())
    insert = postgresql.insert if fleet.engine.dialect.name == "postgresql" else sqlite.insert
    accepted = 0
    for i in range(0, len(unique), 1000):
        chunk = unique[i:i + 1000]
        before = set(s.scalars(select(TelemetryRecord.id).where(TelemetryRecord.id.in_([r["id"] for r in chunk]))))
        fresh = [r for r in chunk if r["id"] not in before]
        if fresh:
            s.execute(insert(TelemetryRecord.__table__).on_conflict_do_nothing(index_elements=["id"]), fresh)
        accepted += len(fresh)
    dup = len(rows) - accepted
    if dup:
        fleet.bump(s, "telemetry_duplicates", dup)
    fleet.bump(s, "telemetry_accepted", accepted)
    return accepted, dup


def reject(fleet: Fleet, exc: FleetError, session: Any = None) -> None:
    name = "telemetry_oversized" if "over the limit" in str(exc) else "telemetry_rejected"
    if session is None:
        with fleet.session() as s:
            fleet.bump(s, name)
    else:
        fleet.bump(session, name)


def ingest(fleet: Fleet, device_id: str, raw: bytes | Any) -> tuple[int, int]:
    """Validate and store one batch; raises FleetError (and counts it) if the batch is refused."""
    try:
        rows = parse_batch(fleet, device_id, raw)
    except FleetError as exc:
        reject(fleet, exc)
        raise
    return insert_rows(fleet, rows)
