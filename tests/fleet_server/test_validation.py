"""Boundary validation (issue 10, items 5 and 6) against a real waitress server.

Every hand-made bad input of the issue answers a 4xx with ``{"error": "<field>: <reason>"}``,
on SQLite and on a real PostgreSQL (which refuses NUL, lone surrogates and 64-bit integers in
INTEGER columns, so a missed check there is a 500); one-time enrollment tokens have exactly
one winner under 20 parallel enrollments.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Callable

import pytest
from sqlalchemy import func, select

from fleet_server import devices, ingest
from fleet_server.db import Device, TelemetryRecord
from fleet_server.errors import FleetError
from fleet_server.validation import MAX_FEATURE_CHARS
from tests.fleet_server.conftest import Api, enroll

DEEP = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJ = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
HUGE = 99999999999999999999


@pytest.fixture()
def served(make_server: Any, db_url: str | None, make_bundle: Callable[..., Path]) -> tuple[Api, dict[str, Any]]:
    api = Api(make_server(db_url=db_url))
    code, body, _ = api("POST", "/api/v1/models", raw=make_bundle(1).read_bytes())
    assert code == 201, body
    return api, enroll(api, "dev-a")


def _msg(i: int, **body: Any) -> dict[str, Any]:
    return {"id": f"m-{i}", "kind": "prediction", "created": 1_700_000_000.0 + i,
            "body": {"model": "churn", "model_version": 1, "score": 0.5, "label": 1, **body}}


def test_one_time_token_has_exactly_one_winner_under_20_parallel_enrollments(make_server: Any, db_url: str | None) -> None:
    api = Api(make_server(db_url=db_url))
    for rnd in range(4):
        code, tok, _ = api("POST", "/api/v1/enrollment-tokens", {"group": "race"})
        assert code == 201
        gate = threading.Barrier(20, timeout=30)
        results: list[tuple[int, Any]] = []
        lock = threading.Lock()

        def one(i: int) -> None:
            gate.wait()
            code, body, _ = api("POST", "/api/v1/devices/enroll", {"token": tok["token"], "device_id": f"r{rnd}-d{i}"}, token=None)
            with lock:
                results.append((code, body))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        codes = sorted(c for c, _ in results)
        assert len(codes) == 20 and codes.count(201) == 1, (rnd, codes, [b for c, b in results if c >= 500][:2])
        assert all(c == 409 for c in codes if c != 201), codes
        assert all(b["error"].startswith("token:") for c, b in results if c != 201)
        with api.server.fleet.session() as s:
            assert s.scalar(select(func.count()).select_from(Device).where(Device.device_id.like(f"r{rnd}-%"))) == 1
    # the used token stays used; an unknown one is a 401
    assert api("POST", "/api/v1/devices/enroll", {"token": tok["token"], "device_id": "late"}, token=None)[0] == 409
    assert api("POST", "/api/v1/devices/enroll", {"token": "enr_nope", "device_id": "late"}, token=None)[0] == 401


def _cases(dev: str) -> list[tuple[str, str, Any, str, set[int], str]]:
    """(method, path, body (bytes = raw), who, statuses, error prefix)."""
    tel, st = f"/api/v1/devices/{dev}/telemetry", f"/api/v1/devices/{dev}/status"
    big = "x" * (10 * 1024 * 1024)
    return [
        # enrollment tokens: non-object bodies, wrong types, ranges, bounded strings
        ("POST", "/api/v1/enrollment-tokens", b"true", "admin", {400}, "body:"),
        ("POST", "/api/v1/enrollment-tokens", b"[1,2,3]", "admin", {400}, "body:"),
        ("POST", "/api/v1/enrollment-tokens", b'"x"', "admin", {400}, "body:"),
        ("POST", "/api/v1/enrollment-tokens", {"tags": 5}, "admin", {400}, "tags:"),
        ("POST", "/api/v1/enrollment-tokens", {"tags": "abc"}, "admin", {400}, "tags:"),
        ("POST", "/api/v1/enrollment-tokens", {"tags": ["ok", "x" * 1000]}, "admin", {400}, "tags[1]:"),
        ("POST", "/api/v1/enrollment-tokens", {"ttl_seconds": "abc"}, "admin", {400}, "ttl_seconds:"),
        ("POST", "/api/v1/enrollment-tokens", {"ttl_seconds": 1e20}, "admin", {400}, "ttl_seconds:"),
        ("POST", "/api/v1/enrollment-tokens", {"ttl_seconds": -100}, "admin", {400}, "ttl_seconds:"),
        ("POST", "/api/v1/enrollment-tokens", {"group": "g" * 1000}, "admin", {400}, "group:"),
        ("POST", "/api/v1/enrollment-tokens", {"group": big}, "admin", {413}, "body:"),
        ("POST", "/api/v1/enrollment-tokens", b'{"ttl_seconds": NaN}', "admin", {400}, "body:"),
        ("POST", "/api/v1/enrollment-tokens", DEEP, "admin", {400}, "body:"),
        # huge integers in paths and queries
        ("GET", f"/api/v1/models/churn/versions/{HUGE}", None, "admin", {404}, "Not Found:"),
        ("GET", f"/api/v1/models/churn/drift?version={HUGE}", None, "admin", {400}, "version:"),
        ("GET", f"/api/v1/models/churn/performance?version={HUGE}", None, "admin", {400}, "version:"),
        ("GET", "/api/v1/models/churn/drift?version=%D9%A3", None, "admin", {400}, "version:"),
        ("GET", "/api/v1/models/churn/drift?end=1e308", None, "admin", {400}, "end:"),
        ("GET", f"/api/v1/models/churn/labeled?version={HUGE}", None, "admin", {400}, "version:"),
        ("POST", f"/api/v1/models/churn/predict?version={HUGE}", {"tenure": 1}, "admin", {400}, "version:"),
        ("GET", f"/api/v1/rollouts/{HUGE}", None, "admin", {404}, "Not Found:"),
        ("POST", f"/api/v1/rollouts/{HUGE}/pause", None, "admin", {404}, "Not Found:"),
        ("POST", f"/api/v1/models/churn/versions/{HUGE}/approve", None, "admin", {404}, "Not Found:"),
        ("GET", "/api/v1/alerts?limit=-5", None, "admin", {400}, "limit:"),
        ("GET", "/api/v1/models/a%00b", None, "admin", {400}, "name:"),
        ("GET", "/api/v1/alerts?model=a%00b", None, "admin", {400}, "model:"),
        # rollouts
        ("POST", "/api/v1/rollouts", {"model": "churn", "version": "abc"}, "admin", {400}, "version:"),
        ("POST", "/api/v1/rollouts", {"model": "churn", "version": 1e30}, "admin", {400}, "version:"),
        ("POST", "/api/v1/rollouts", {"model": "churn", "version": 2.5}, "admin", {400}, "version:"),
        ("POST", "/api/v1/rollouts", {"model": "churn", "version": HUGE}, "admin", {400}, "version:"),
        ("POST", "/api/v1/rollouts", {"model": ["x"]}, "admin", {400}, "model:"),
        ("POST", "/api/v1/rollouts", {"model": "churn", "steps": "abc"}, "admin", {400}, "steps:"),
        ("POST", "/api/v1/rollouts", {"model": "churn", "selector": {"groups": "abc"}}, "admin", {400}, "selector.groups:"),
        ("POST", "/api/v1/rollouts", {"model": "churn", "gates": {"max_failure_ratio": "x"}}, "admin", {400}, "gates.max_failure_ratio:"),
        ("POST", "/api/v1/rollouts", [1], "admin", {400}, "body:"),
        ("POST", "/api/v1/rollouts", DEEP, "admin", {400}, "body:"),
        # nested 100,000 deep everywhere a JSON body goes
        ("POST", "/api/v1/models/churn/predict", DEEP, "admin", {400}, "body:"),
        ("POST", "/api/v1/models/churn/predict", DEEP_OBJ, "admin", {400}, "body:"),
        ("POST", "/api/v1/monitor/run", DEEP, "admin", {400}, "body:"),
        ("PUT", "/api/v1/models/churn/policy", DEEP_OBJ, "admin", {400}, "body:"),
        ("POST", "/api/v1/models/churn/versions/1/approve", DEEP, "admin", {400}, "body:"),
        ("POST", "/api/v1/devices/enroll", DEEP, None, {400}, "body:"),
        ("POST", tel, DEEP, "device", {400}, "body:"),
        ("POST", st, DEEP_OBJ, "device", {400}, "body:"),
        # device ids: ASCII only, bounded
        ("POST", "/api/v1/devices/enroll", {"token": "enr_x", "device_id": "gerät-ü"}, None, {400}, "device_id:"),
        ("POST", "/api/v1/devices/enroll", {"token": "enr_x", "device_id": "٣٣٣"}, None, {400}, "device_id:"),
        ("POST", "/api/v1/devices/enroll", {"token": "enr_x", "device_id": "a/b"}, None, {400}, "device_id:"),
        ("POST", "/api/v1/devices/enroll", {"token": "enr_x", "device_id": "d" * 65}, None, {400}, "device_id:"),
        ("POST", "/api/v1/devices/enroll", {"token": 5, "device_id": "ok"}, None, {400}, "token:"),
        # reachable with only a device token
        ("POST", tel, {"messages": [_msg(1, model_version=2**63)]}, "device", {400}, "messages[0].body.model_version:"),
        ("POST", tel, {"messages": [_msg(1, model_version=2**31)]}, "device", {400}, "messages[0].body.model_version:"),
        ("POST", tel, {"messages": [_msg(1, model="m" * 500)]}, "device", {400}, "messages[0].body.model:"),
        ("POST", tel, {"messages": [_msg(1, label="l" * 500)]}, "device", {400}, "messages[0].body.label:"),
        ("POST", tel, {"messages": [_msg(1, features={"f": {"nested": 1}})]}, "device", {400}, "messages[0].body.features.f:"),
        ("POST", tel, b'{"messages": [{"id": "\\ud800", "kind": "prediction", "created": 1, "body": {}}]}', "device", {400}, "messages[0].id:"),
        ("POST", tel, b'{"messages": [{"id": "a\\u0000b", "kind": "prediction", "created": 1, "body": {}}]}', "device", {400}, "messages[0].id:"),
        ("POST", tel, b"\xff\xfe{}", "device", {400}, "body:"),
        ("POST", st, {"active_version": 2**70}, "device", {400}, "active_version:"),
        ("POST", st, {"active_model": {"x": 1}, "active_version": 1}, "device", {400}, "active_model:"),
        ("POST", st, {"active_version": "2"}, "device", {400}, "active_version:"),
        ("POST", st, {"health": "h" * 1000}, "device", {400}, "health:"),
        ("POST", st, {"health": big}, "device", {413}, "body:"),
        ("POST", st, {"capabilities": {"formats": "onnx"}}, "device", {400}, "capabilities.formats:"),
        ("POST", st, {"last_install": {"version": 2**63}}, "device", {400}, "last_install.version:"),
        ("POST", st, {"outbox": {"k": "v" * 20_000}}, "device", {400}, "outbox:"),
        ("POST", st, b'{"health": "\\udfff"}', "device", {400}, "health:"),
        ("POST", st, [1], "device", {400}, "body:"),
    ]


def test_bad_input_is_a_4xx_naming_the_field(served: tuple[Api, dict[str, Any]]) -> None:
    api, dev = served
    tokens = {"admin": "default", "device": dev["token"], None: None}
    wrong = []
    for method, path, body, who, statuses, prefix in _cases(dev["device_id"]):
        raw = body if isinstance(body, bytes) else None
        code, out, _ = api(method, path, None if raw is not None else body, raw=raw, token=tokens[who])
        err = out.get("error", "") if isinstance(out, dict) else ""
        if code not in statuses or not err.startswith(prefix):
            wrong.append((method, path[:60], str(body)[:60], code, str(out)[:160]))
    assert not wrong, "\n".join(map(str, wrong))
    # nothing of the above was stored: the device's row is as enrolled
    code, d, _ = api("GET", f"/api/v1/devices/{dev['device_id']}")
    assert code == 200 and d["active_version"] is None and d["health"] is None and d["last_seen"] is None
    code, c, _ = api("GET", "/api/v1/counters")
    assert c.get("telemetry_accepted", 0) == 0 and c["telemetry_rejected"] >= 9


def test_good_input_still_works_and_long_features_are_trimmed(served: tuple[Api, dict[str, Any]]) -> None:
    api, dev = served
    code, tok, _ = api("POST", "/api/v1/enrollment-tokens", {"group": "g1", "tags": ["a", "b"], "ttl_seconds": 60})
    assert code == 201
    code, _, _ = api("POST", "/api/v1/devices/enroll", {"token": tok["token"], "device_id": "Dev_2.b-3"}, token=None)
    assert code == 201
    code, d, _ = api("GET", "/api/v1/devices/Dev_2.b-3")
    assert d["tags"] == ["a", "b"] and d["group"] == "g1"
    assert api("POST", "/api/v1/enrollment-tokens", raw=b"")[0] == 201  # an empty body means the defaults
    status = {"device_id": dev["device_id"], "ts": "2026-01-01T00:00:00Z", "active_model": "churn", "active_version": 1,
              "previous_version": None, "health": "ok", "last_install": {"version": 1, "result": "installed", "seconds": 0.1},
              "capabilities": {"backends": ["onnx"], "formats": ["onnx"]}, "outbox": {"pending": 0}, "agent_version": "0.1",
              "transport": "http", "future_field": {"kept": "out"}}
    assert api("POST", f"/api/v1/devices/{dev['device_id']}/status", status, token=dev["token"])[0] == 204
    msgs = [_msg(1, features={"gender": "x" * 10_000, "tenure": 3}), _msg(2, entity_id=12, label="Yes"),
            {"id": "s-1", "kind": "sketch", "created": 1_700_000_000.0,
             "body": {"model": "churn", "model_version": 1, "n": 3, "fields": {}, "score": {"counts": [1, 2]}}}]
    code, out, _ = api("POST", f"/api/v1/devices/{dev['device_id']}/telemetry", {"device_id": dev["device_id"], "messages": msgs},
                       token=dev["token"])
    assert code == 200 and out == {"accepted": 3, "duplicates": 0}, out
    with api.server.fleet.session() as s:
        row = s.get(TelemetryRecord, "m-1")
        assert row is not None and row.body["features"]["gender"] == "x" * MAX_FEATURE_CHARS and row.body["features"]["tenure"] == 3
        assert s.get(TelemetryRecord, "s-1").score is None and s.get(TelemetryRecord, "m-2").entity_id == "12"
    code, r, _ = api("POST", "/api/v1/rollouts", {"model": "churn", "version": 1, "steps": [50, 100], "selector": {"groups": ["default"]},
                                                  "gates": {"max_failure_ratio": 0.5}})
    assert code == 201 and r["version"] == 1 and r["steps"] == [50.0, 100.0]


def test_record_status_and_parse_batch_refuse_bad_fields_before_the_database(served: tuple[Api, dict[str, Any]]) -> None:
    """What the MQTT bridge calls: a bad status or batch is a FleetError (a 4xx), never a DB error."""
    api, dev = served
    fleet = api.server.fleet
    for bad, field in [({"active_model": {"x": 1}, "active_version": 1}, "status.active_model:"),
                       ({"active_version": 2**70}, "status.active_version:"), ({"health": ["x"]}, "status.health:"),
                       ({"capabilities": [1]}, "status.capabilities:"), ({"a": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}, "status:"),
                       ({"health": "\ud800"}, "status.health:"), ({"active_model": "a\x00b"}, "status.active_model:")]:
        with pytest.raises(FleetError) as ei:
            devices.record_status(fleet, dev["device_id"], bad)
        assert str(ei.value).startswith(field) and ei.value.status == 400, (bad, str(ei.value))
    with pytest.raises(FleetError, match=r"^device_id:"):
        devices.record_status(fleet, "bad/id", {"health": "ok"})
    for raw, field in [(json.dumps({"messages": [_msg(1, model_version=2**63)]}).encode(), "messages[0].body.model_version:"),
                       ({"messages": [_msg(1, score=True)]}, "messages[0].body.score:"),
                       ({"messages": [_msg(1, entity_id=2**60)]}, "messages[0].body.entity_id:"),
                       ({"messages": [{**_msg(1), "created": float("inf")}]}, "messages[0].created:"),
                       ({"messages": [{**_msg(1), "kind": "other"}]}, "messages[0].kind:")]:
        with pytest.raises(FleetError) as ei:
            ingest.parse_batch(fleet, dev["device_id"], raw)
        assert str(ei.value).startswith(field), (raw, str(ei.value))
    devices.record_status(fleet, dev["device_id"], {"active_model": "churn", "active_version": 1, "health": "ok"})
    code, d, _ = api("GET", f"/api/v1/devices/{dev['device_id']}")
    assert d["active_version"] == 1 and d["health"] == "ok"
