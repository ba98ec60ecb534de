"""Health, counters and the OpenAPI document.

``/healthz`` is liveness: 200 while the process serves HTTP. ``/readyz`` is readiness: the
database answers ``SELECT 1`` and every part the server registered in ``fleet.readiness``
(broker connection and self-ping, ingest, monitor and reconciler threads) says ok; 200
``{"ready": true, "checks": {name: {"ok", "detail"}}}`` or 503 with ``"failing": [names]``.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify
from sqlalchemy import select, text

from fleet_server.api.auth import admin_required, fleet
from fleet_server.db import Counter
from fleet_server.openapi import SPEC

bp = Blueprint("meta", __name__)


@bp.get("/healthz")
def healthz() -> Any:
    return jsonify({"ok": True})


def _database() -> tuple[bool, str]:
    try:
        with fleet().engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any driver error means not ready; the detail says which
        return False, " ".join(f"{type(exc).__name__}: {getattr(exc, 'orig', None) or exc}".split())[:300]
    return True, "SELECT 1 ok"


@bp.get("/readyz")
def readyz() -> Any:
    checks: dict[str, dict[str, Any]] = {}
    for name, check in [("database", _database), *fleet().readiness.items()]:
        try:
            ok, detail = check()
        except Exception as exc:  # noqa: BLE001 - a check that fails to run is a failing check
            ok, detail = False, f"check failed: {type(exc).__name__}: {exc}"
        checks[name] = {"ok": bool(ok), "detail": str(detail)}
    failing = [name for name, c in checks.items() if not c["ok"]]
    if failing:
        return jsonify({"ready": False, "failing": failing, "checks": checks}), 503
    return jsonify({"ready": True, "checks": checks})


@bp.get("/api/v1/openapi.json")
def openapi() -> Any:
    return jsonify(SPEC)


@bp.get("/api/v1/counters")
@admin_required
def counters() -> Any:
    with fleet().session() as s:
        return jsonify({c.name: c.value for c in s.scalars(select(Counter))})
