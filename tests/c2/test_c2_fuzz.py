"""Schemathesis against the C2 routes of a real server with a MiNiFi agent's token: no 5xx, responses as documented."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.c2.conftest import enroll_agent
from tests.fleet_server.conftest import Api, wait_for
from tests.fleet_server.test_fuzz import _assert_clean, run_schemathesis


@pytest.mark.slow  # full route fuzz in make test-all; the contract tests check every C2 refusal in the default run
def test_fuzz_c2_routes_with_an_agent_token(c2_server: Any, make_bundle: Callable[..., Path], tmp_path: Path) -> None:
    api = Api(c2_server)
    assert api("POST", "/api/v1/models", raw=make_bundle(1).read_bytes())[0] == 201
    cred = enroll_agent(api, "fuzz-dev")
    assert api("POST", "/api/v1/rollouts", {"model": "churn", "steps": [100]})[0] == 201
    wait_for(lambda: api("GET", "/api/v1/devices/fuzz-dev")[1].get("assignment"), what="an assignment to sync")
    spec = tmp_path / "openapi.json"
    spec.write_text(json.dumps(api("GET", "/api/v1/openapi.json", token=None)[1]))
    t = {"server": c2_server, "api": api, "spec": spec, "tmp": tmp_path}
    fig = run_schemathesis(t, cred["token"], name="c2", include=["--include-path-regex", r"^/c2-protocol/"], max_examples=30, max_time=25)
    _assert_clean(fig)
