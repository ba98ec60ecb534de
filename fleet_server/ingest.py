"""Telemetry ingest: validate, then insert in batches, idempotent by message id.

The same function serves the HTTP batch POST and the MQTT bridge. A malformed or oversized
payload is rejected with a reason and counted (``telemetry_rejected``, ``telemetry_oversized``);
it never raises into the bridge's loop. Duplicates (a redelivery after a lost PUBACK) are
skipped by the primary key and counted as ``telemetry_duplicates``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite

from edgefleet.protocol import MAX_FEATURE_CHARS
from fleet_server.core import Fleet
from fleet_server.db import TelemetryRecord, utcnow
from fleet_server.errors import FleetError
from fleet_server.validation import DEVICE_ID, TELEMETRY_MESSAGE, check, clean, parse_json

KINDS = {"prediction", "sketch", "outcome"}
MAX_MESSAGES = 5000


def _trim_features(body: dict[str, Any]) -> None:
    """Cut string feature values to ``MAX_FEATURE_CHARS``: the prediction is kept (the device was
    told it was received), only the stored copy of an overlong raw feature is shortened."""
    feats = body.get("features")
    if isinstance(feats, dict):
        for k, v in feats.items():
            if isinstance(v, str) and len(v) > MAX_FEATURE_CHARS:
                feats[k] = v[:MAX_FEATURE_CHARS]


def _row(device_id: str, msg: Any, i: int) -> dict[str, Any]:
    if isinstance(msg, dict) and isinstance(msg.get("body"), dict):
        _trim_features(msg["body"])
    check(msg, TELEMETRY_MESSAGE, f"messages[{i}]")
    body = msg["body"]
    score, label, entity = body.get("score"), body.get("label"), body.get("entity_id")
    return {
        "id": msg["id"], "device_id": device_id, "kind": msg["kind"], "created": float(msg["created"]), "received_at": utcnow(),
        "model": body.get("model"),
        "model_version": body.get("model_version"),
        "entity_id": str(entity) if entity is not None else None,
        "score": float(score) if isinstance(score, (int, float)) else None,
        "label": str(label) if label is not None else None,
        "body": body,
    }


def parse_batch(fleet: Fleet, device_id: str, raw: bytes | Any) -> list[dict[str, Any]]:
    if isinstance(raw, (bytes, bytearray)):
        if len(raw) > fleet.cfg.max_telemetry_bytes:
            raise FleetError(f"body: {len(raw)} bytes is over the limit of {fleet.cfg.max_telemetry_bytes}")
        raw = parse_json(bytes(raw))
    else:
        clean(raw)
    if not isinstance(raw, dict) or not isinstance(raw.get("messages"), list):
        raise FleetError("messages: expected {\"device_id\": ..., \"messages\": [...]}")
    check(device_id, DEVICE_ID, "device_id")
    if "device_id" in raw and raw["device_id"] != device_id:
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
    table: Table = TelemetryRecord.__table__  # type: ignore[assignment]  # a mapped class's table is a Table
    stmt = insert(table).on_conflict_do_nothing(index_elements=["id"]).returning(table.c.id)
    for i in range(0, len(unique), 1000):
        # RETURNING names the rows this statement inserted, so two requests racing on one id
        # cannot both count it as accepted (a SELECT before the INSERT could)
        accepted += len(s.execute(stmt, unique[i:i + 1000]).all())
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
