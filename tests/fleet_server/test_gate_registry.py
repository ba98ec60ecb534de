"""Each Fleet owns its rollout gates: ``create_app`` registers the ML canary gate on its own Fleet,
two apps in one process share nothing, and the reconciler asks exactly the gates of its Fleet."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from fleet_server import devices, rollouts
from fleet_server.app import create_app
from fleet_server.core import Fleet, GateRegistry, ServerConfig
from fleet_server.monitoring.gates import ml_canary_gate


def _fleet(tmp_path: Path, name: str, keypair: dict[str, Any]) -> Fleet:
    return Fleet(ServerConfig(data_dir=tmp_path / name, embedded_broker=False, trust_keys=[keypair["public_path"]]))


def _rollout(fleet: Fleet, bundle: Path) -> int:
    client = create_app(fleet).test_client()
    auth = {"Authorization": f"Bearer {fleet.secrets.admin_token}"}
    assert client.post("/api/v1/models", data=bundle.read_bytes(), headers=auth).status_code == 201
    devices.enroll(fleet, devices.create_enrollment_token(fleet), "gate-dev")  # a rollout must reach someone: one device,
    devices.record_status(fleet, "gate-dev", {"capabilities": {"formats": ["onnx"]}, "health": "ok",  # already on v1, so
                                              "active_model": "churn", "active_version": 1})  # its step settles at once
    r = client.post("/api/v1/rollouts", json={"model": "churn", "steps": [100], "gates": {"ml": True}}, headers=auth)
    assert r.status_code == 201, r.get_json()
    return int(r.get_json()["id"])


def test_two_apps_in_one_process_do_not_share_gates(tmp_path: Path, keypair: dict[str, Any],
                                                     make_bundle: Callable[..., Path]) -> None:
    bare = _fleet(tmp_path, "bare", keypair)
    assert list(bare.gates) == [], "a Fleet without an app has no extra gates"
    a, b = _fleet(tmp_path, "a", keypair), _fleet(tmp_path, "b", keypair)
    create_app(a)
    create_app(a)  # the same app factory twice on one Fleet: still one ML gate
    assert a.gates.names() == ["ml_canary"] and ml_canary_gate in a.gates
    assert ml_canary_gate not in b.gates and ml_canary_gate not in bare.gates

    calls: list[tuple[str, int]] = []

    def probe(fleet: Fleet, rollout: Any, targets: list[Any]) -> str | None:
        calls.append((fleet.data_dir.name, rollout.id))
        return "probe says no"

    a.gates.register("probe", probe)
    rid_a, rid_b = _rollout(a, make_bundle(1)), _rollout(b, make_bundle(1))
    assert "probe" not in b.gates.names()
    rollouts.reconcile(b)  # the one device runs v1: the step is settled at once and b's gates (ML only) pass
    rollouts.reconcile(a)
    assert calls == [("a", rid_a)], "the probe ran for a rollout of another Fleet, or not at all"
    with a.session() as s:
        assert s.get(rollouts.Rollout, rid_a).state == "halted"
        assert s.get(rollouts.Rollout, rid_a).reason == "probe says no"
    with b.session() as s:
        assert s.get(rollouts.Rollout, rid_b).state == "completed"


def test_registry_refuses_a_second_gate_under_a_taken_name_and_non_callables() -> None:
    reg = GateRegistry()
    reg.register("ml_canary", ml_canary_gate)
    reg.register("ml_canary", ml_canary_gate)
    with pytest.raises(ValueError, match="ml_canary"):
        reg.register("ml_canary", lambda *a: None)
    with pytest.raises(TypeError):
        reg.register("x", None)  # type: ignore[arg-type]
    assert list(reg) == [ml_canary_gate]
