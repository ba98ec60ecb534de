"""The fleet server as a C2 server, against a real server: contract checks for both agents' parsers,
the C++ agent's handle_sync re-enacted through v1 -> v2 -> rollback, and a tampered asset."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any, Callable

from runtimes.nifi.core import ScoreChurnCore, ScoreChurnSettings
from tests.c2.agents import CppAgent, check_for_both_parsers, http, java_ack, java_heartbeat
from tests.c2.conftest import enroll_agent
from tests.fleet_server.conftest import Api, wait_for

TELCO_RECORD = {"gender": "Female", "SeniorCitizen": 0, "Partner": "Yes", "Dependents": "No", "tenure": 12, "PhoneService": "Yes",
                "MultipleLines": "No", "InternetService": "Fiber optic", "OnlineSecurity": "No", "OnlineBackup": "No",
                "DeviceProtection": "No", "TechSupport": "No", "StreamingTV": "No", "StreamingMovies": "No",
                "Contract": "Month-to-month", "PaperlessBilling": "Yes", "PaymentMethod": "Electronic check",
                "MonthlyCharges": 70.35, "TotalCharges": 844.2}


def _rollout(api: Api, version: int, **kw: Any) -> dict[str, Any]:
    code, r, _ = api("POST", "/api/v1/rollouts", {"model": "churn", "version": version, "steps": [100], **kw})
    assert code == 201, r
    return r


def _status(api: Api, rid: int) -> dict[str, Any]:
    return api("GET", f"/api/v1/rollouts/{rid}")[1]


def _wait_state(api: Api, rid: int, states: set[str]) -> dict[str, Any]:
    return wait_for(lambda: (lambda r: r if r["state"] in states else None)(_status(api, rid)), timeout=30, what=f"rollout {rid} {states}")


def _base(server: Any, cred: dict[str, Any]) -> str:
    host = server.url.split("://", 1)[1]
    return f"http://{cred['device_id']}:{cred['token']}@{host}/c2-protocol"  # libcurl sends the user-info as Basic


def _assigned(api: Api, device_id: str, version: int) -> None:
    wait_for(lambda: ((api("GET", f"/api/v1/devices/{device_id}")[1].get("assignment") or {}).get("version") == version),
             timeout=30, what=f"{device_id} assigned v{version}")


def test_cpp_and_java_heartbeats_get_responses_both_parsers_accept(c2_server: Any, make_bundle: Callable[..., Path]) -> None:
    api = Api(c2_server)
    assert api("POST", "/api/v1/models", raw=make_bundle(1).read_bytes())[0] == 201
    cpp, java, legacy = (enroll_agent(api, n) for n in ("cpp-1", "java-1", "old-1"))
    _rollout(api, 1)
    for d in ("cpp-1", "java-1", "old-1"):
        _assigned(api, d, 1)
    url = c2_server.url + "/c2-protocol"

    # C++: Basic from URL user-info; a fresh agent reports the string "null"
    hb = {"operation": "heartbeat", "agentInfo": {"identifier": "cpp-1", "agentClass": "edge"}, "resourceInfo": {"hash": "null"}}
    code, resp = http("POST", _base(c2_server, cpp) + "/heartbeat", hb)
    assert code == 200, resp
    (op,) = check_for_both_parsers(resp)
    assert op["operation"] == "SYNC" and op["operand"] == "resource"
    names = sorted(f"{i['resourcePath']}/{i['resourceName']}" for i in op["args"]["resourceList"])
    assert names[0] == "edgefleet/churn/bundle.tar" and all(n.startswith("edgefleet/keys/") for n in names[1:]) and len(names) == 2

    # Java: no header at all, the token in the path base; bearer works too
    code, jresp = http("POST", f"{url}/agent/{java['token']}/heartbeat", java_heartbeat("java-1", "null"))
    assert code == 200, jresp
    (jop,) = check_for_both_parsers(jresp)
    code, again = http("POST", f"{url}/heartbeat", java_heartbeat("java-1", "null"), {"Authorization": f"Bearer {java['token']}"})
    assert code == 200 and check_for_both_parsers(again)[0]["args"]["globalHash"] == jop["args"]["globalHash"]

    # an agent that reports a hash but does not understand SYNC is sent UPDATE/asset instead, nothing counted as failed
    hdr = {"Authorization": f"Bearer {java['token']}"}
    assert http("POST", f"{url}/acknowledge", java_ack(jop["identifier"], "OPERATION_NOT_UNDERSTOOD", "sync/resource"), hdr)[0] == 200
    code, jresp = http("POST", f"{url}/heartbeat", java_heartbeat("java-1", "null"), hdr)
    assert [o["operation"] for o in check_for_both_parsers(jresp)] == ["UPDATE", "UPDATE"]
    assert api("GET", "/api/v1/devices/java-1")[1]["last_install"] is None

    # an agent that reports no resourceInfo gets UPDATE/asset, once per assignment
    code, lresp = http("POST", f"{url}/heartbeat", java_heartbeat("old-1", None), {"Authorization": f"Bearer {legacy['token']}"})
    ops = check_for_both_parsers(lresp)
    assert [o["operation"] for o in ops] == ["UPDATE", "UPDATE"] and ops[0]["args"]["file"] == "edgefleet/churn/bundle.tar"
    for o in ops:  # every asset URL downloads without any credential: the link carries it
        code, data = http("GET", o["args"]["url"])
        assert code == 200 and o["args"]["url"].split("/assets/")[1].startswith(hashlib.sha256(data).hexdigest())
    code, ack = http("POST", f"{url}/agent/{legacy['token']}/acknowledge", java_ack(ops[0]["identifier"], "FULLY_APPLIED"))
    assert code == 200 and ack["applied"] is True, ack
    code, lresp = http("POST", f"{url}/heartbeat", java_heartbeat("old-1", None), {"Authorization": f"Bearer {legacy['token']}"})
    assert lresp == {"requestedOperations": []}
    dev = api("GET", "/api/v1/devices/old-1")[1]
    assert dev["active_version"] == 1 and dev["last_seen"] and dev["capabilities"]["kind"] == "minifi"

    # refusals: one line naming the field, never a 5xx
    bad: list[tuple[str, Any, dict[str, str], int, str]] = [
        (f"{url}/heartbeat", {"resourceInfo": {"hash": "null"}}, {}, 401, "authorization"),
        (f"{url}/heartbeat", {}, {"Authorization": "Bearer dev_unknown"}, 401, "unknown device token"),
        (f"{url}/agent/dev_nobody/heartbeat", {}, {}, 401, "unknown device token"),
        (f"{url}/heartbeat", {}, {"Authorization": "Basic !!!"}, 401, "Basic"),
        (f"{url}/heartbeat", {}, {"Authorization": "Basic " + base64.b64encode(f"someone:{cpp['token']}".encode()).decode()}, 401, "Basic user"),
        (f"{url}/heartbeat", [1, 2], {"Authorization": f"Bearer {java['token']}"}, 400, "body: expected an object"),
        (f"{url}/heartbeat", {"agentInfo": "x"}, {"Authorization": f"Bearer {java['token']}"}, 400, "agentInfo: expected an object"),
        (f"{url}/heartbeat", {"resourceInfo": {"hash": 5}}, {"Authorization": f"Bearer {java['token']}"}, 400, "resourceInfo.hash"),
        (f"{url}/heartbeat", b"{not json", {"Authorization": f"Bearer {java['token']}"}, 400, "body"),
        (f"{url}/acknowledge", {"operationId": "x"}, {"Authorization": f"Bearer {java['token']}"}, 400, "operationState: required"),
        (f"{url}/acknowledge", java_ack("ef-1-s0", "DONE"), {"Authorization": f"Bearer {java['token']}"}, 400, "operationState.state"),
        (f"{url}/acknowledge", java_ack("op-7", "FULLY_APPLIED"), {"Authorization": f"Bearer {java['token']}"}, 400, "operationId"),
        (f"{url}/acknowledge", java_ack("ef-99-s0", "FULLY_APPLIED"), {"Authorization": f"Bearer {java['token']}"}, 404, "operationId"),
        (f"{url}/assets/{'0' * 64}?agent=java-1&sig=forged", None, {}, 401, "sig"),
    ]
    for target, body, headers, want, needle in bad:
        code, resp = http("GET" if body is None else "POST", target, body, headers)
        assert code == want and needle in resp["error"], (target, body, code, resp)
    # a device enrolled as an edgefleet agent is not a C2 agent
    code, tok, _ = api("POST", "/api/v1/enrollment-tokens", {})
    plain = api("POST", "/api/v1/devices/enroll", {"token": tok["token"], "device_id": "plain-1"}, token=None)[1]
    code, resp = http("POST", f"{url}/heartbeat", {}, {"Authorization": f"Bearer {plain['token']}"})
    assert code == 403 and "kind 'minifi'" in resp["error"]
    code, tok, _ = api("POST", "/api/v1/enrollment-tokens", {})
    code, resp, _ = api("POST", "/api/v1/devices/enroll", {"token": tok["token"], "device_id": "x-1", "kind": "nifi"}, token=None)
    assert code == 400 and resp["error"].startswith("kind:")


def test_cpp_handle_sync_follows_v1_v2_rollback_and_a_tampered_asset_fails_the_gate(
        c2_server_any_db: Any, make_bundle: Callable[..., Path], tmp_path: Path) -> None:
    c2_server = c2_server_any_db
    api = Api(c2_server)
    fleet = c2_server.fleet
    assert api("POST", "/api/v1/models", raw=make_bundle(1).read_bytes())[0] == 201
    agents = [CppAgent(_base(c2_server, enroll_agent(api, f"mf-{i}")), tmp_path / f"assets-{i}", f"mf-{i}") for i in range(3)]
    # and one agent that reports no asset hash: it is driven with UPDATE/asset through the same rollouts
    legacy = CppAgent(_base(c2_server, enroll_agent(api, "mf-old")), tmp_path / "assets-old", "mf-old", report_hash=False)
    agents.append(legacy)

    def converge(version: int) -> None:
        for a in agents:
            _assigned(api, a.identifier, version)
            a.beat()

    a0 = agents[0]
    # the processor reads the synced files at their stable paths, as a flow on this agent would
    proc = ScoreChurnCore(ScoreChurnSettings(model_path=str(a0.root / "edgefleet/churn/bundle.tar"),
                                             trusted_keys=str(a0.root / "edgefleet/keys")))
    record = json.dumps({**TELCO_RECORD}).encode()

    def scores_with() -> int:
        return proc.score_content(record).scored[0][2].version

    r1 = _rollout(api, 1, selector={"groups": ["minifi"]})  # grouped and targeted like any device
    converge(1)
    assert _wait_state(api, r1["id"], {"completed"})["counts"] == {"installed": 4}
    assert scores_with() == 1
    state = json.loads((a0.root / ".state").read_text())
    bundle = a0.root / "edgefleet/churn/bundle.tar"
    v1_bytes = bundle.read_bytes()
    assert state["digest"] and len(state["assets"]) == 2 and not list(a0.root.rglob("*.part"))
    assert a0.beat() == {"requestedOperations": []}  # the reported hash equals the desired set: nothing to do

    # v2: a new resource id at the same path; .part then rename, the v1 file replaced
    assert api("POST", "/api/v1/models", raw=make_bundle(2).read_bytes())[0] == 201
    r2 = _rollout(api, 2)
    converge(2)
    assert _wait_state(api, r2["id"], {"completed"})["counts"] == {"installed": 4}
    state2 = json.loads((a0.root / ".state").read_text())
    ids = sorted(state2["assets"])
    assert any(i.startswith("churn-v2-") for i in ids) and not any(i.startswith("churn-v1-") for i in ids)
    assert bundle.read_bytes() != v1_bytes and not list(a0.root.rglob("*.part"))
    assert [a["operationState"]["state"] for a in a0.acks] == ["FULLY_APPLIED", "FULLY_APPLIED"]
    old_bundle = legacy.root / "edgefleet/churn/bundle.tar"
    assert old_bundle.read_bytes() == bundle.read_bytes()  # forceDownload=true replaced v1 at the stable path
    assert [a["operationState"]["state"] for a in legacy.acks] == ["FULLY_APPLIED"] * 2 + ["FULLY_APPLIED", "NO_OPERATION"]
    assert scores_with() == 2

    # rollback of the completed rollout: every agent back to v1, the v2 item deleted
    assert api("POST", f"/api/v1/rollouts/{r2['id']}/rollback")[0] == 200
    converge(1)
    assert bundle.read_bytes() == v1_bytes and old_bundle.read_bytes() == v1_bytes
    devs = {d["device_id"]: d for d in api("GET", "/api/v1/devices")[1]["devices"]}
    assert all(devs[a.identifier]["active_version"] == 1 for a in agents)
    assert scores_with() == 1

    # v3 tampered at rest on the server: the agent's fetch is refused, it acks NOT_APPLIED, the gate halts
    assert api("POST", "/api/v1/models", raw=make_bundle(3).read_bytes())[0] == 201
    v3 = api("GET", "/api/v1/models/churn")[1]
    slim = fleet.artifacts_dir / f"{v3['variants']['onnx']['sha256']}.tar"
    data = bytearray(slim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    slim.write_bytes(bytes(data))
    r3 = _rollout(api, 3, gates={"max_failure_ratio": 0.0})
    converge(3)
    assert a0.acks[-1]["operationState"]["state"] == "NOT_APPLIED" and "Failed to fetch" in a0.acks[-1]["operationState"]["details"]
    halted = _wait_state(api, r3["id"], {"halted"})
    assert "install/health failures" in halted["reason"] and "C2 NOT_APPLIED" in halted["reason"]
    assert json.loads((a0.root / ".state").read_text())["digest"] == ""  # the C++ agent clears its digest on any error
    # the agent deleted v1's item before the failed rename; the processor keeps scoring with v1
    assert not bundle.exists() and scores_with() == 1
    # the same tampered bytes reaching the agent's disk another way (a proxy, a local edit) are refused by the processor
    bundle.write_bytes(slim.read_bytes())
    assert scores_with() == 1 and "refused bundle" in (proc.last_refusal or "")
    # the halted rollout sends its agents back to v1; the next sync restores the file
    converge(1)
    assert bundle.read_bytes() == v1_bytes and json.loads((a0.root / ".state").read_text())["digest"]
    assert scores_with() == 1 and proc.last_refusal is None
    assert old_bundle.read_bytes() == v1_bytes and "Failed to fetch asset" in " ".join(
        a["operationState"]["details"] for a in legacy.acks if a["operationState"]["state"] == "NOT_APPLIED")
