"""The rollout POST hands a large rollout's fan-out to the reconciler thread (issue 13): it answers
before any target is assigned, and the reconciler then signs and stores every assignment, each
verifiable by its device; a small rollout is still assigned by the time the POST answers (real
waitress + SQLite).
How fast the POST answers for 1,000 targets is measured by bench/rollout.py, not here."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from cryptography.hazmat.primitives import serialization

from fleet_server.api.rollouts import POST_INLINE_SMALL
from runtimes.python.agent import verify_assignment
from tests.fleet_server.conftest import Api, enroll, wait_for

ONNX = {"capabilities": {"backends": ["onnx"], "formats": ["onnx"]}, "health": "no-model"}


def test_a_large_rollout_is_fanned_out_by_the_reconciler(make_server: Any, make_bundle: Callable[..., Path]) -> None:
    api = Api(make_server(reconcile_seconds=30.0))  # a long period: only the POST's wake starts the reconciler's pass early
    assert api("POST", "/api/v1/models", raw=make_bundle(1).read_bytes())[0] == 201
    n = POST_INLINE_SMALL * 3
    creds = [enroll(api, f"d{i:03d}") for i in range(n)]
    for c in creds:
        assert api("POST", f"/api/v1/devices/{c['device_id']}/status", ONNX, token=c["token"])[0] == 204
    code, r, _ = api("POST", "/api/v1/rollouts", {"model": "churn", "steps": [100]})
    assert code == 201 and r["state"] == "running", r
    assert r["counts"].get("assigned", 0) < n, r["counts"]  # the reconciler's pass may already have begun, never all of it
    st = wait_for(lambda: (s := api("GET", f"/api/v1/rollouts/{r['id']}")[1])["counts"].get("assigned") == n and s,
                  timeout=25, what="the reconciler to assign every target")
    assert st["targets"] == n and st["counts"] == {"assigned": n}
    for c in creds[:: POST_INLINE_SMALL // 2]:  # spread over the fleet
        code, env, _ = api("GET", f"/api/v1/devices/{c['device_id']}/assignment", token=c["token"])
        assert code == 200
        trusted = [serialization.load_pem_public_key(p.encode()) for p in c["assignment_keys"]]
        a = verify_assignment(env, trusted, c["device_id"])
        assert a["model"] == "churn" and a["version"] == 1
