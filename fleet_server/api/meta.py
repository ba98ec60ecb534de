"""Health, counters and the OpenAPI document."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify
from sqlalchemy import select

from fleet_server.api.auth import admin_required, fleet
from fleet_server.db import Counter
from fleet_server.openapi import SPEC

bp = Blueprint("meta", __name__)


@bp.get("/healthz")
def healthz() -> Any:
    return jsonify({"ok": True})


@bp.get("/api/v1/openapi.json")
def openapi() -> Any:
    return jsonify(SPEC)


@bp.get("/api/v1/counters")
@admin_required
def counters() -> Any:
    with fleet().session() as s:
        return jsonify({c.name: c.value for c in s.scalars(select(Counter))})
