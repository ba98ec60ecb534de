"""A rollout that would reach nobody is refused with the reason, and a publish that no enrolled
device can run says so (real waitress server on SQLite, the real CLI in a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

from tests.fleet_server.conftest import Api, enroll

ONNX = {"capabilities": {"backends": ["onnx"], "formats": ["onnx"]}, "health": "no-model"}
TFLITE = {"capabilities": {"backends": ["tflite"], "formats": ["tflite"]}, "health": "no-model"}


def _cli(api: Api, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFLEET_")}
    token_file = str(api.server.fleet.secrets.dir / "admin-token")
    return subprocess.run([sys.executable, "-m", "edgefleet_cli.main", *argv, "--server", api.server.url, "--token-file", token_file],
                          capture_output=True, text=True, env=env, timeout=60)


def test_a_rollout_matching_no_device_is_refused_with_the_known_groups(make_server: Any, make_bundle: Callable[..., Path]) -> None:
    api = Api(make_server())
    assert api("POST", "/api/v1/models", raw=make_bundle(1).read_bytes())[0] == 201
    code, body, _ = api("POST", "/api/v1/rollouts", {"model": "churn", "steps": [100]})
    assert code == 409 and body["error"].startswith("selector: no device is enrolled yet"), body
    enroll(api, "s1", "stores", ["pilot"])
    enroll(api, "w1", "online")
    code, body, _ = api("POST", "/api/v1/rollouts", {"model": "churn", "steps": [100], "selector": {"groups": ["nosuchgroup"]}})
    assert code == 409, body
    assert body["error"] == "selector: groups ['nosuchgroup'] match no enrolled device; known groups: online, stores"
    code, body, _ = api("POST", "/api/v1/rollouts", {"model": "churn", "selector": {"groups": ["x"], "tags": ["nosuchtag"]}})
    assert code == 409 and body["error"] == ("selector: groups ['x'] or tags ['nosuchtag'] match no enrolled device; "
                                             "known groups: online, stores; known tags: pilot"), body
    assert api("GET", "/api/v1/rollouts")[1]["rollouts"] == [], "a refused rollout leaves no row behind"
    code, body, _ = api("POST", "/api/v1/rollouts", {"model": "churn", "steps": [100], "selector": {"tags": ["pilot"]}})
    assert code == 201 and body["targets"] == 1, body


def test_cli_rollout_start_to_an_unknown_group_prints_one_line(make_server: Any, make_bundle: Callable[..., Path]) -> None:
    api = Api(make_server())
    assert api("POST", "/api/v1/models", raw=make_bundle(1).read_bytes())[0] == 201
    enroll(api, "s1", "stores")
    proc = _cli(api, "rollout", "start", "--model", "churn", "--groups", "nosuchgroup")
    assert proc.returncode == 1 and proc.stdout == "", proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgefleet: error: "), proc.stderr
    assert "groups ['nosuchgroup'] match no enrolled device; known groups: stores" in lines[0]
    assert "COMPLETED" not in proc.stdout + proc.stderr


def test_publish_warns_when_no_enrolled_device_can_run_the_bundle(make_server: Any, make_bundle: Callable[..., Path]) -> None:
    api = Api(make_server())
    code, body, _ = api("POST", "/api/v1/models", raw=make_bundle(1).read_bytes())
    assert code == 201 and body["warnings"] == [], "no device yet: nothing to compare with"
    lite = enroll(api, "lite-1")
    assert api("POST", "/api/v1/devices/lite-1/status", TFLITE, token=lite["token"])[0] == 204
    proc = _cli(api, "publish", str(make_bundle(2)))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("published churn v2 (onnx)")
    assert proc.stderr.strip() == ("edgefleet: warning: no enrolled device can run churn v2: the bundle offers ['onnx'], "
                                   "the 1 device(s) that reported run ['tflite']; compile it with --targets tflite")
    both = enroll(api, "onnx-1")
    assert api("POST", "/api/v1/devices/onnx-1/status", ONNX, token=both["token"])[0] == 204
    code, body, _ = api("POST", "/api/v1/models", raw=make_bundle(3).read_bytes())
    assert code == 201 and len(body["warnings"]) == 1, body
    assert body["warnings"][0].startswith("1 of 2 device(s) cannot run churn v3 (lite-1): they run ['tflite']"), body


def test_cli_status_of_an_old_rollout_that_reached_nobody_says_so(make_server: Any, make_bundle: Callable[..., Path]) -> None:
    from fleet_server.db import Rollout

    api = Api(make_server())
    assert api("POST", "/api/v1/models", raw=make_bundle(1).read_bytes())[0] == 201
    with api.server.fleet.session() as s:  # a row kept from before such rollouts were refused
        s.add(Rollout(model="churn", version=1, selector={"groups": ["nosuchgroup"]}, steps=[100.0], gates={}, state="completed", history=[]))
    proc = _cli(api, "rollout", "status")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert out[0].startswith("rollout 1: churn v1 COMPLETED") and "0/0 installed" in out[0], out
    assert out[1] == "  reached no device: its selector matched no enrolled device", out
