"""Monitoring routes: policies, alerts, drift, performance and fairness reports, a manual pass, /metrics.

Every route needs the admin token, ``/metrics`` included: the server holds no other secret-free
surface, and a loopback exemption would open it to anything behind a local reverse proxy.
Prometheus sends the token with ``authorization: {type: Bearer, credentials_file: <data
dir>/secrets/admin-token}`` in its scrape config.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy import select

from fleet_server import validation
from fleet_server.api.auth import admin_required, fleet
from fleet_server.api.body import json_body
from fleet_server.errors import FleetError
from fleet_server.model_versions import get_version
from fleet_server.monitoring import aggregate, fairness, metrics, policy, service
from fleet_server.monitoring.tables import Alert

bp = Blueprint("monitoring", __name__)


@bp.record_once
def _setup(state: Any) -> None:
    state.app.extensions["edgefleet_metrics"] = metrics.make_registry(state.app.extensions["edgefleet"])


def _number_arg(name: str) -> float | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise FleetError(f"{name}: expected a number, got {raw!r}") from None
    if not math.isfinite(value) or not 0 <= value <= 1e11:
        raise FleetError(f"{name}: expected unix seconds in [0, 1e11]")
    return value


@bp.get("/api/v1/models/<name>/policy")
@admin_required
def get_policy(name: str) -> Any:
    get_version(fleet(), name)
    with fleet().session() as s:
        from fleet_server.monitoring.tables import MonitorPolicy

        stored = s.get(MonitorPolicy, name) is not None
        return jsonify({"model": name, "stored": stored, "policy": policy.load(s, name).as_dict()})


@bp.put("/api/v1/models/<name>/policy")
@admin_required
def put_policy(name: str) -> Any:
    mv = get_version(fleet(), name)
    body = json_body({})  # policy.validate checks the type and names the field ("policy.<key>")
    with fleet().session() as s:
        p = policy.validate(body, policy.load(s, name))  # partial bodies update the stored policy
        inputs = [f["name"] for f in mv.manifest["input_schema"]["fields"]]
        stray = [f for f in p.fairness_fields if f not in inputs]
        if stray and "fairness_fields" in body:  # groups are read from sampled features: only input fields are there
            raise FleetError(f"policy.fairness_fields: {stray[0]!r} is not an input field of {name} v{mv.version} "
                             f"(sampled predictions carry only {', '.join(inputs)})")
        policy.save(s, name, p)
    return jsonify({"model": name, "stored": True, "policy": p.as_dict()})


@bp.get("/api/v1/alerts")
@admin_required
def list_alerts() -> Any:
    state = request.args.get("state")
    if state not in (None, "firing", "cleared"):
        raise FleetError(f"state: {state!r} is not one of ['cleared', 'firing']")
    limit = validation.int_arg(request.args.get("limit"), "limit", lo=1, hi=5000) or 500
    if len(request.args.get("model", "")) > validation.MAX_NAME_CHARS:
        raise FleetError(f"model: at most {validation.MAX_NAME_CHARS} characters")
    q = select(Alert).order_by(Alert.id.desc()).limit(limit)
    if request.args.get("model"):
        q = q.where(Alert.model == request.args["model"])
    if state:
        q = q.where(Alert.state == state)
    with fleet().session() as s:
        return jsonify({"alerts": [service.describe(a) for a in s.scalars(q)]})


def _report(name: str, which: str) -> Any:
    mv = get_version(fleet(), name, validation.int_arg(request.args.get("version"), "version"))
    # ?window_seconds= regroups the same telemetry for viewing (the dashboard's 1 h ... 7 d); alerts keep the policy's width
    width = validation.int_arg(request.args.get("window_seconds"), "window_seconds", lo=60, hi=366 * 86_400)
    with fleet().session() as s:
        p = policy.load(s, name)
        config = p.monitor_config() if width is None else dataclasses.replace(p.monitor_config(), window_seconds=float(width))
        W = config.window_seconds
        end = _number_arg("end")
        start = _number_arg("start")
        if start is None:
            start = math.floor((end or time.time()) / W) * W - p.lookback_windows * W
        if which == "fairness":
            report = fairness.fairness_report(s, mv.manifest, p, start=start, end=end, window_seconds=W)
        else:
            fn = aggregate.drift_report if which == "drift" else aggregate.performance_report
            report = fn(s, mv.manifest, config, start=start, end=end)
    report["start"], report["end"] = start, end
    return jsonify(report)


@bp.get("/api/v1/models/<name>/drift")
@admin_required
def drift(name: str) -> Any:
    return _report(name, "drift")


@bp.get("/api/v1/models/<name>/performance")
@admin_required
def performance(name: str) -> Any:
    return _report(name, "performance")


@bp.get("/api/v1/models/<name>/fairness")
@admin_required
def fairness_route(name: str) -> Any:
    return _report(name, "fairness")


@bp.post("/api/v1/monitor/run")
@admin_required
def run_now() -> Any:
    body = json_body(validation.MONITOR_RUN_REQUEST, optional=True) or {}
    now = body.get("now")
    return jsonify({"events": service.run_monitor(fleet(), now)})


@bp.get("/metrics")
@admin_required
def prometheus() -> Any:
    registry = current_app.extensions["edgefleet_metrics"]
    return Response(metrics.exposition(registry), content_type=metrics.CONTENT_TYPE)
