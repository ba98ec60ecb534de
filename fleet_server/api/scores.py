"""The call-centre score lookup, and the read-only API keys that call it.

    GET    /api/v1/scores/<model>/<entity_id>   the latest batch score (Bearer: a scores:read key, or the admin token)
    POST   /api/v1/api-keys                      {"kind": "scores:read", "name": "call-centre"} -> the key, shown once
    GET    /api/v1/api-keys                      the keys (ids, kinds, names; never the secret)
    DELETE /api/v1/api-keys/<key_id>             revoke one

The scores are written by ``edgefleet batch-score`` (``runtimes/spark``) into the operational
database: the server reads its ``latest`` table, keyed by (model, entity_id). That database is
``ServerConfig.scores_db_url`` (``edgefleet server --scores-db URL[?table=T]``), by default the
fleet database itself, table ``scores``. A batch score is as old as its nightly run
(``scored_at``, ``age_seconds``); for a decision on fresh data, call the real-time REST predict.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
import threading
from typing import Any
from urllib.parse import parse_qs, urlsplit

from flask import Blueprint, current_app, jsonify
from sqlalchemy import inspect, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from fleet_server import validation as v
from fleet_server.api.auth import admin_required, fleet, key_required
from fleet_server.api.body import json_body
from fleet_server.db import ApiKey, make_engine, utcnow
from fleet_server.errors import FleetError, NotFound

bp = Blueprint("scores", __name__, url_prefix="/api/v1")

SCORES_READ = "scores:read"
KINDS = [SCORES_READ]
DEFAULT_TABLE = "scores"
TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,40}$")
MAX_ENTITY_CHARS = 256
KEY_ID_PATTERN = "^[0-9a-f]{8}$"

API_KEY_REQUEST = {"type": "object", "required": ["kind", "name"], "additionalProperties": False,
                   "properties": {"kind": {"type": "string", "enum": KINDS},
                                  "name": {"type": "string", "minLength": 1, "maxLength": v.MAX_NAME_CHARS, "pattern": v.NAME_PATTERN}}}
SCORE = {"type": "object", "required": ["model", "entity_id", "probability", "model_version", "bundle_sha256", "scored_at", "run_id"],
         "properties": {"model": {"type": "string"}, "entity_id": {"type": "string"}, "probability": {"type": "number"},
                        "label": {"type": ["string", "null"]}, "model_version": {"type": "integer"},
                        "bundle_sha256": {"type": "string"}, "scored_at": {"type": "string"}, "run_id": {"type": "string"},
                        "age_seconds": {"type": "number"}, "source": {"type": "string"}}}

_lock = threading.Lock()


def split_scores_url(url: str) -> tuple[str, str]:
    """(database URL, latest table) of ``--scores-db``: ``?table=`` names the table (default ``scores``)."""
    parts = urlsplit(url)
    table = parse_qs(parts.query).get("table", [DEFAULT_TABLE])[-1]
    if not TABLE_NAME.match(table):
        raise FleetError(f"scores_db: table {table!r} is not a plain SQL name (letters, digits, _)")
    return url.split("?", 1)[0], table


def _scores_db() -> tuple[Engine, str]:
    ext = current_app.extensions
    with _lock:
        if "edgefleet_scores" not in ext:
            f = fleet()
            url = getattr(f.cfg, "scores_db_url", None)
            if url:
                db, table = split_scores_url(url)
                ext["edgefleet_scores"] = (make_engine(db), table)
            else:
                ext["edgefleet_scores"] = (f.engine, DEFAULT_TABLE)
    got: tuple[Engine, str] = ext["edgefleet_scores"]
    return got


def _iso(value: Any) -> tuple[str, float | None]:
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value, None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        age = (dt.datetime.now(dt.timezone.utc) - value).total_seconds()
        return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), round(age, 3)
    return str(value), None


@bp.get("/scores/<name>/<entity_id>")
@key_required(SCORES_READ)
def get_score(name: str, entity_id: str) -> Any:
    if len(name) > v.MAX_NAME_CHARS:
        raise FleetError(f"name: {len(name)} characters, at most {v.MAX_NAME_CHARS}")
    if len(entity_id) > MAX_ENTITY_CHARS:
        raise FleetError(f"entity_id: {len(entity_id)} characters, at most {MAX_ENTITY_CHARS}")
    engine, table = _scores_db()
    sql = text(f"SELECT model, entity_id, probability, label, model_version, bundle_sha256, scored_at, run_id "
               f"FROM {table} WHERE model = :m AND entity_id = :e")
    try:
        with engine.connect() as conn:
            row = conn.execute(sql, {"m": name, "e": entity_id}).first()
    except SQLAlchemyError as exc:
        try:
            missing = not inspect(engine).has_table(table)
        except SQLAlchemyError:
            missing = False
        if missing:
            raise NotFound(f"scores: no batch scores stored yet (the scores database has no table {table!r}; "
                           f"run edgefleet batch-score --output ...?table={table})") from None
        raise FleetError(f"scores: the scores database refused the lookup: {type(getattr(exc, 'orig', None) or exc).__name__}") from None
    if row is None:
        raise NotFound(f"entity_id: no batch score of model {name!r} for {entity_id!r}")
    scored_at, age = _iso(row[6])
    return jsonify({"model": row[0], "entity_id": row[1], "probability": float(row[2]), "label": row[3],
                    "model_version": int(row[4]), "bundle_sha256": row[5], "scored_at": scored_at, "run_id": row[7],
                    "age_seconds": age, "source": "batch"})


@bp.post("/api-keys")
@admin_required
def create_key() -> Any:
    body = json_body(API_KEY_REQUEST)
    key_id = secrets.token_hex(4)
    token = f"efk_{key_id}_{secrets.token_urlsafe(24)}"
    with fleet().session() as s:
        s.add(ApiKey(key_hash=hashlib.sha256(token.encode()).hexdigest(), key_id=key_id, kind=body["kind"], name=body["name"]))
        s.commit()
    return jsonify({"key": token, "key_id": key_id, "kind": body["kind"], "name": body["name"],
                    "note": "shown once: the server keeps only its sha256"}), 201


@bp.get("/api-keys")
@admin_required
def list_keys() -> Any:
    with fleet().session() as s:
        keys = s.scalars(select(ApiKey).order_by(ApiKey.created_at)).all()
        return jsonify({"keys": [{"key_id": k.key_id, "kind": k.kind, "name": k.name, "created_at": k.created_at.isoformat() + "Z",
                                  "revoked": k.revoked_at is not None} for k in keys]})


@bp.delete("/api-keys/<key_id>")
@admin_required
def revoke_key(key_id: str) -> Any:
    with fleet().session() as s:
        key = s.scalars(select(ApiKey).where(ApiKey.key_id == key_id[:16])).first()
        if key is None:
            raise NotFound(f"key_id: no API key {key_id[:16]!r}")
        if key.revoked_at is None:
            key.revoked_at = utcnow()
            s.commit()
        return jsonify({"key_id": key.key_id, "revoked": True})
