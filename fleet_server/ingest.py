"""Telemetry ingest: validate, then insert in batches, idempotent by message id.

The same function serves the HTTP batch POST and the MQTT bridge. A malformed or oversized
payload is rejected with a reason and counted (``telemetry_rejected``, ``telemetry_oversized``);
it never raises into the bridge's loop. Duplicates (a redelivery after a lost PUBACK) are
skipped by the primary key and counted as ``telemetry_duplicates``.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite

from edgefleet.protocol import MAX_FEATURE_CHARS
from fleet_server.core import Fleet
from fleet_server.db import TelemetryRecord, utcnow
from fleet_server.errors import FleetError
from fleet_server.validation import DEVICE_ID, DEVICE_ID_PATTERN, MAX_DB_INT, MAX_NAME_CHARS, MAX_SAFE_INT, TELEMETRY_MESSAGE, check, clean, parse_json

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


_KINDS = frozenset(KINDS)
_DEVICE_ID = re.compile(DEVICE_ID_PATTERN.lstrip("^").rstrip("$"))
_NUM = (int, float)


def _small_int(v: Any, lo: int, hi: int) -> bool:
    return type(v) is int and lo <= v <= hi


def _plainly_valid(msg: Any) -> bool:
    """True only for a message ``check(msg, TELEMETRY_MESSAGE)`` accepts, in straight-line code.

    Sound, not complete: the common shape (what runtimes/python/telemetry.py sends) is accepted
    here at a fraction of the generic walker's cost; anything else (a sketch's score object, a
    long or unusual value, any doubt) answers False and goes through ``check``, which accepts or
    names the field exactly as before. tests/fleet_server/test_ingest_fastpath.py holds the two
    to the same answers on hostile variants.
    """
    if type(msg) is not dict:
        return False
    mid, kind, created, body = msg.get("id"), msg.get("kind"), msg.get("created"), msg.get("body")
    if type(mid) is not str or not 0 < len(mid) <= 64 or type(kind) is not str or kind not in _KINDS:
        return False
    if type(created) not in _NUM or not 0 <= created <= 1e11 or type(body) is not dict or len(body) > 64:  # type: ignore[operator]
        return False
    for k, v in body.items():
        if v is None and k != "device_id":  # null is allowed for every body field but device_id
            continue
        if k == "features":
            if type(v) is not dict or len(v) > 512:
                return False
            for fv in v.values():
                t = type(fv)
                if not (fv is None or t is bool or t is float or (t is int and -MAX_SAFE_INT <= fv <= MAX_SAFE_INT)
                        or (t is str and len(fv) <= MAX_FEATURE_CHARS)):
                    return False
        elif k == "score":
            if type(v) is not float and not _small_int(v, -MAX_SAFE_INT, MAX_SAFE_INT):
                return False
        elif k == "label":
            t = type(v)
            if not (t is bool or (t is str and len(v) <= 64) or (t is float and -MAX_SAFE_INT <= v <= MAX_SAFE_INT)
                    or _small_int(v, -MAX_SAFE_INT, MAX_SAFE_INT)):
                return False
        elif k == "model":
            if type(v) is not str or len(v) > MAX_NAME_CHARS:
                return False
        elif k == "model_version":
            if not _small_int(v, 0, MAX_DB_INT):
                return False
        elif k == "entity_id":
            if not ((type(v) is str and len(v) <= 256) or _small_int(v, -MAX_SAFE_INT, MAX_SAFE_INT)):
                return False
        elif k == "device_id":
            if type(v) is not str or not 0 < len(v) <= 64 or _DEVICE_ID.fullmatch(v) is None:
                return False
        else:  # any other field: at most 65,536 bytes of JSON, which a short scalar cannot exceed (12 bytes per char at most)
            t = type(v)
            if not (t is bool or t is float or _small_int(v, -MAX_SAFE_INT, MAX_SAFE_INT) or (t is str and len(v) <= 5000)):
                return False
    return True


def _row(device_id: str, msg: Any, i: int) -> dict[str, Any]:
    if isinstance(msg, dict) and isinstance(msg.get("body"), dict):
        _trim_features(msg["body"])
    if not _plainly_valid(msg):
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
