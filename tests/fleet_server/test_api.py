"""Fleet server HTTP API against a real waitress server, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable

import pytest

from edgefleet import keys
from fleet_server.openapi import SPEC
from tests.fleet_server.conftest import Api, enroll


@pytest.fixture()
def api(make_server: Any, db_url: str | None) -> Api:
    return Api(make_server(db_url=db_url))


def test_admin_endpoints_need_the_admin_token(api: Api) -> None:
    assert api("GET", "/api/v1/models", token=None)[0] == 401
    code, body, _ = api("GET", "/api/v1/models", token="wrong")
    assert code == 403 and body["error"].startswith("authorization:")
    assert api("GET", "/api/v1/models")[0] == 200
    assert api("GET", "/healthz", token=None)[0] == 200


def test_upload_verifies_signature_and_versions_only_go_up(api: Api, make_bundle: Callable[..., Path], tmp_path: Path) -> None:
    code, body, _ = api("POST", "/api/v1/models", raw=make_bundle(2).read_bytes())
    assert code == 201 and body["name"] == "churn" and body["version"] == 2 and body["formats"] == ["onnx"]
    code, body, _ = api("POST", "/api/v1/models", raw=make_bundle(2).read_bytes())
    assert code == 409 and "versions only go up" in body["error"]
    code, body, _ = api("POST", "/api/v1/models", raw=make_bundle(1, name="old.tar").read_bytes())
    assert code == 409
    # a bundle signed by a key the server does not trust
    rogue_dir = tmp_path / "rogue"
    keys.generate_keypair(rogue_dir)
    from compiler.bundle import bundle_files
    from edgefleet.bundle_format import open_bundle, pack

    b = open_bundle(make_bundle(3))
    rogue = keys.load_private_key(rogue_dir / "private.pem")
    files = bundle_files({**b.manifest, "key_id": keys.key_id(rogue.public_key())}, [], rogue)
    files.update({k: v for k, v in b.files.items() if k.startswith("artifacts/")})
    code, body, _ = api("POST", "/api/v1/models", raw=pack(files))
    assert code == 400 and "does not trust" in body["error"]
    # a tampered artifact inside a correctly signed manifest
    files = dict(b.files)
    files["artifacts/model.onnx"] = files["artifacts/model.onnx"][:-1] + b"\x00"
    code, body, _ = api("POST", "/api/v1/models", raw=pack(files))
    assert code == 400 and "sha256" in body["error"]
    code, body, _ = api("POST", "/api/v1/models", raw=b"not a tar")
    assert code == 400 and body["error"].startswith("bundle:")
    code, body, _ = api("GET", "/api/v1/models/churn")
    assert code == 200 and body["version"] == 2 and body["manifest"]["name"] == "churn"
    assert api("GET", "/api/v1/models/nope")[0] == 404
    code, body, _ = api("GET", "/api/v1/models")
    assert [m["name"] for m in body["models"]] == ["churn"] and body["models"][0]["latest"] == 2


def test_enrollment_is_one_time_and_devices_cannot_read_each_other(api: Api, make_bundle: Callable[..., Path]) -> None:
    a = enroll(api, "dev-a")
    b = enroll(api, "dev-b")
    assert a["token"] != b["token"] and len(a["assignment_keys"]) == 1 and len(a["publisher_keys"]) >= 1
    assert "trusted_keys" not in a, "no merged legacy key list: it would let the server key sign bundles"
    assert not set(a["assignment_keys"]) & set(a["publisher_keys"])
    code, tok, _ = api("POST", "/api/v1/enrollment-tokens", {"group": "g"})
    assert api("POST", "/api/v1/devices/enroll", {"token": tok["token"], "device_id": "dev-c"}, token=None)[0] == 201
    code, body, _ = api("POST", "/api/v1/devices/enroll", {"token": tok["token"], "device_id": "dev-d"}, token=None)
    assert code == 409 and "one-time" in body["error"]
    assert api("POST", "/api/v1/devices/enroll", {"token": "enr_forged", "device_id": "x"}, token=None)[0] == 401

    api("POST", "/api/v1/models", raw=make_bundle(1).read_bytes())
    from fleet_server import devices as devmod
    from fleet_server.model_versions import get_version

    devmod.issue_assignment(api.server.fleet, "dev-b", get_version(api.server.fleet, "churn", 1), "onnx")
    code, body, _ = api("GET", "/api/v1/devices/dev-b/assignment", token=a["token"])
    assert code == 403 and "dev-a cannot access dev-b" in body["error"]
    code, env, hdrs = api("GET", "/api/v1/devices/dev-b/assignment", token=b["token"])
    assert code == 200 and env["assignment"]["device_id"] == "dev-b"
    assert api("GET", "/api/v1/devices/dev-b/assignment", token=b["token"], headers={"If-None-Match": hdrs["etag"]})[0] == 304
    assert api("POST", "/api/v1/devices/dev-b/status", {"health": "ok"}, token=a["token"])[0] == 403


def test_artifacts_by_sha_with_etag_range_and_if_range(api: Api, make_bundle: Callable[..., Path]) -> None:
    data = make_bundle(1).read_bytes()
    code, body, _ = api("POST", "/api/v1/models", raw=data)
    sha = body["sha256"]
    assert sha == hashlib.sha256(data).hexdigest()
    dev = enroll(api, "dev-a")
    path = f"/api/v1/artifacts/{sha}"
    code, full, hdrs = api("GET", path, token=dev["token"])
    assert code == 200 and full == data and hdrs["etag"] == f'"{sha}"'
    code, part, hdrs = api("GET", path, token=dev["token"], headers={"Range": "bytes=100-"})
    assert code == 206 and part == data[100:] and hdrs["content-range"] == f"bytes 100-{len(data) - 1}/{len(data)}"
    code, part, _ = api("GET", path, token=dev["token"], headers={"Range": "bytes=100-", "If-Range": '"stale"'})
    assert code == 200 and part == data
    assert api("GET", path, token=dev["token"], headers={"If-None-Match": f'"{sha}"'})[0] == 304
    assert api("GET", path, token=None)[0] == 401
    assert api("GET", "/api/v1/artifacts/" + "0" * 64, token=dev["token"])[0] == 404


def test_telemetry_is_idempotent_and_bad_payloads_are_counted(api: Api) -> None:
    dev = enroll(api, "dev-a")
    msgs = [{"id": f"m{i}", "kind": "prediction", "created": 1.0 + i, "body": {"model": "churn", "model_version": 1, "score": 0.3, "entity_id": f"c{i}"}} for i in range(300)]
    batch = {"device_id": "dev-a", "messages": msgs}
    code, body, _ = api("POST", "/api/v1/devices/dev-a/telemetry", batch, token=dev["token"])
    assert code == 200 and body == {"accepted": 300, "duplicates": 0}
    code, body, _ = api("POST", "/api/v1/devices/dev-a/telemetry", {"device_id": "dev-a", "messages": msgs[250:] + [{**msgs[0], "id": "new"}]}, token=dev["token"])
    assert body == {"accepted": 1, "duplicates": 50}
    for bad, reason in [
        ({"device_id": "dev-a", "messages": [{"id": "x", "kind": "weird", "created": 1, "body": {}}]}, "kind"),
        ({"device_id": "dev-a", "messages": [{"id": "x", "kind": "sketch", "created": "yesterday", "body": {}}]}, "created"),
        ({"device_id": "dev-b", "messages": []}, "device_id"),
    ]:
        code, body, _ = api("POST", "/api/v1/devices/dev-a/telemetry", bad, token=dev["token"])
        assert code == 400 and reason in body["error"]
    code, body, _ = api("POST", "/api/v1/devices/dev-a/telemetry", raw=b"{" * 10, token=dev["token"])
    assert code == 400 and "not JSON" in body["error"]
    code, body, _ = api("POST", "/api/v1/devices/dev-a/telemetry", raw=b" " * (4 * 1024 * 1024 + 1), token=dev["token"])
    assert code == 400 and "over the limit" in body["error"]
    counters = api("GET", "/api/v1/counters")[1]
    assert counters["telemetry_accepted"] == 301 and counters["telemetry_duplicates"] == 50
    assert counters["telemetry_rejected"] == 4 and counters["telemetry_oversized"] == 1


def test_rest_predict_and_422_naming_the_field(api: Api, make_bundle: Callable[..., Path], lr_result: Any) -> None:
    api("POST", "/api/v1/models", raw=make_bundle(1).read_bytes())
    rec = lr_result.manifest["canary"]["rows"][0]["input"]
    code, body, _ = api("POST", "/api/v1/models/churn/predict", rec)
    assert code == 200 and body["model_version"] == 1
    assert body["probability"] == pytest.approx(lr_result.manifest["canary"]["rows"][0]["probabilities"][1], abs=1e-9)
    code, body, _ = api("POST", "/api/v1/models/churn/predict", [rec, rec])
    assert code == 200 and len(body) == 2
    code, body, _ = api("POST", "/api/v1/models/churn/predict", [rec, {**rec, "Contract": 7}])
    assert code == 422 and "'Contract'" in body["error"]
    code, body, _ = api("POST", "/api/v1/models/churn/predict", {k: v for k, v in rec.items() if k != "tenure"})
    assert code == 422 and "'tenure'" in body["error"] and "missing field" in body["error"]
    assert api("POST", "/api/v1/models/nope/predict", rec)[0] == 404


def test_openapi_lists_exactly_the_routes(api: Api) -> None:
    import re

    app_routes = set()
    from fleet_server.app import create_app

    app = create_app(api.server.fleet)
    for rule in app.url_map.iter_rules():
        if rule.rule == "/demo" or rule.rule.startswith("/demo/"):
            continue  # the browser demo's page, files and read-only bundle (api/demo.py): not part of the device/admin API
        if rule.rule == "/dashboard" or rule.rule.startswith("/dashboard/"):
            continue  # the dashboard's static page and Chart.js (api/dashboard.py); its data comes from the admin API
        path = re.sub(r"<(?:[a-z]+:)?([a-z_0-9]+)>", r"{\1}", rule.rule)
        for m in rule.methods - {"HEAD", "OPTIONS"}:
            app_routes.add((path, m.lower()))
    doc_routes = {(p, m) for p, ops in SPEC["paths"].items() for m in ops}
    assert app_routes == doc_routes
    code, body, _ = api("GET", "/api/v1/openapi.json", token=None)
    assert code == 200 and body["openapi"].startswith("3.")


def test_runtime_aware_assignment_reports_incapable_devices_and_controls(api: Api, make_bundle: Callable[..., Path]) -> None:
    api("POST", "/api/v1/models", raw=make_bundle(1).read_bytes())
    onnx_dev, tflite_dev, silent = enroll(api, "onnx-dev"), enroll(api, "tflite-dev"), enroll(api, "silent-dev")
    api("POST", "/api/v1/devices/onnx-dev/status", {"capabilities": {"backends": ["onnx"], "formats": ["onnx"]}, "health": "no-model"}, token=onnx_dev["token"])
    api("POST", "/api/v1/devices/tflite-dev/status", {"capabilities": {"backends": ["tflite"], "formats": ["tflite"]}, "health": "no-model"}, token=tflite_dev["token"])
    code, r, _ = api("POST", "/api/v1/rollouts", {"model": "churn", "steps": [100]})
    assert code == 201
    code, st, _ = api("GET", f"/api/v1/rollouts/{r['id']}")
    assert st["incapable"] == [{"device_id": "tflite-dev", "reason": "device runs ['tflite'], the bundle offers ['onnx']"}]
    assert st["counts"] == {"assigned": 1, "incapable": 1, "pending": 1}, "a device that never reported waits"
    code, env, _ = api("GET", "/api/v1/devices/onnx-dev/assignment", token=onnx_dev["token"])
    assert env["assignment"]["format"] == "onnx" and env["assignment"]["version"] == 1
    assert api("GET", "/api/v1/devices/tflite-dev/assignment", token=tflite_dev["token"])[0] == 404
    code, body, _ = api("POST", "/api/v1/rollouts", {"model": "churn", "steps": [100]})
    assert code == 400 and "still running" in body["error"]
    assert api("POST", f"/api/v1/rollouts/{r['id']}/pause")[1]["state"] == "paused"
    code, body, _ = api("POST", f"/api/v1/rollouts/{r['id']}/pause")
    assert code == 400 and "cannot pause a rollout that is paused" in body["error"]
    assert api("POST", f"/api/v1/rollouts/{r['id']}/resume")[1]["state"] == "running"
    assert api("POST", f"/api/v1/rollouts/{r['id']}/abort")[1]["state"] == "aborted"
    code, body, _ = api("POST", f"/api/v1/rollouts/{r['id']}/explode")
    assert code == 400 and "not one of" in body["error"]
    code, body, _ = api("POST", "/api/v1/rollouts", {"model": "churn", "steps": [50, 20]})
    assert code == 400 and body["error"].startswith("steps:")
    del silent


def test_late_joiner_gets_only_the_newest_completed_target(api: Api, make_bundle: Callable[..., Path]) -> None:
    from tests.fleet_server.conftest import wait_for

    caps = {"backends": ["onnx"], "formats": ["onnx"]}
    api("POST", "/api/v1/models", raw=make_bundle(1).read_bytes())
    api("POST", "/api/v1/models", raw=make_bundle(2).read_bytes())
    a = enroll(api, "early")
    api("POST", "/api/v1/devices/early/status", {"capabilities": caps, "health": "no-model"}, token=a["token"])
    for version in (1, 2):
        rid = api("POST", "/api/v1/rollouts", {"model": "churn", "version": version, "steps": [100]})[1]["id"]
        wait_for(lambda: api("GET", "/api/v1/devices/early/assignment", token=a["token"])[1]["assignment"]["version"] == version, what=f"v{version} assigned")
        api("POST", "/api/v1/devices/early/status", {"capabilities": caps, "health": "ok", "active_model": "churn", "active_version": version}, token=a["token"])
        wait_for(lambda: api("GET", f"/api/v1/rollouts/{rid}")[1]["state"] == "completed", what=f"rollout of v{version} completed")
    states = [r["state"] for r in api("GET", "/api/v1/rollouts")[1]["rollouts"]]
    assert states == ["completed", "superseded"]
    b = enroll(api, "late")
    api("POST", "/api/v1/devices/late/status", {"capabilities": caps, "health": "no-model"}, token=b["token"])
    env = wait_for(lambda: (lambda r: r[1] if r[0] == 200 else None)(api("GET", "/api/v1/devices/late/assignment", token=b["token"])), what="late joiner assigned")
    assert env["assignment"]["version"] == 2 and env["assignment"]["serial"] == 1, "one assignment, the newest"


def test_a_device_that_falls_back_is_delivered_the_version_again(api: Api, make_bundle: Callable[..., Path]) -> None:
    from tests.fleet_server.conftest import wait_for

    caps = {"backends": ["onnx"], "formats": ["onnx"]}
    for v in (1, 2):
        assert api("POST", "/api/v1/models", raw=make_bundle(v).read_bytes())[0] == 201
    dev = enroll(api, "flaky")
    tok = dev["token"]

    def status(active: int | None, fallback: dict[str, Any] | None = None) -> None:
        body = {"capabilities": caps, "health": "ok", "active_model": "churn", "active_version": active, "fallback": fallback}
        code, resp, _ = api("POST", "/api/v1/devices/flaky/status", body, token=tok)
        assert code in (200, 202, 204), resp

    def serial() -> int:
        return int(api("GET", "/api/v1/devices/flaky/assignment", token=tok)[1]["assignment"]["serial"])

    status(1)
    rid = api("POST", "/api/v1/rollouts", {"model": "churn", "version": 2, "steps": [100]})[1]["id"]
    wait_for(lambda: api("GET", "/api/v1/devices/flaky/assignment", token=tok)[0] == 200, what="v2 assigned")
    first = serial()
    status(2)
    wait_for(lambda: api("GET", f"/api/v1/rollouts/{rid}")[1]["counts"] == {"installed": 1}, what="v2 installed")
    fb = {"from_version": 2, "to_version": 1, "reason": "sha256 of model.onnx does not match the manifest"}
    for n in (1, 2, 3):  # each fallback report brings a fresh signed assignment of v2 ...
        status(1, fb)
        wait_for(lambda: serial() == first + n, what=f"redelivery {n}")
        env = api("GET", "/api/v1/devices/flaky/assignment", token=tok)[1]["assignment"]
        assert env["version"] == 2 and not env["rollback"]
        st = api("GET", f"/api/v1/rollouts/{rid}")[1]
        assert st["counts"] == {"assigned": 1}, st
        status(2)
        wait_for(lambda: api("GET", f"/api/v1/rollouts/{rid}")[1]["counts"] == {"installed": 1}, what="v2 installed again")
    status(1, fb)  # ... but not forever: the fourth makes the target failed, with the device's reason
    st = wait_for(lambda: (lambda s: s if s["counts"] == {"failed": 1} else None)(api("GET", f"/api/v1/rollouts/{rid}")[1]), what="target failed")
    assert serial() == first + 3
    dev_row = [d for d in api("GET", "/api/v1/devices")[1]["devices"] if d["device_id"] == "flaky"][0]
    assert dev_row["active_version"] == 1
    code, body, _ = api("POST", "/api/v1/devices/flaky/status", {"fallback": {"from_version": "2"}}, token=tok)
    assert code == 400 and body["error"].startswith("fallback.from_version:"), body
