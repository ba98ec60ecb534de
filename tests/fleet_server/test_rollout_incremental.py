"""Incremental reconcile passes (issue 13's fan-out) decide what the full walk decided: a step is
the first targets in rollout order, a device that joins mid-step or after completion gets its
target, a refusal counts only when the device reports it after its assignment (one stored before
it is not taken for it), and a settled rollout gives a pass no target to read (a real Fleet on
SQLite, the real reconcile passes, statuses stored as the MQTT bridge and HTTP route store them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from sqlalchemy import select

from fleet_server import devices, rollouts
from fleet_server.core import Fleet, ServerConfig
from fleet_server.db import Rollout, RolloutTarget
from fleet_server.model_versions import register

CAPS = {"capabilities": {"backends": ["onnx"], "formats": ["onnx"]}, "health": "no-model", "active_version": None}


def _fleet(tmp_path: Path, keypair: dict[str, Any], make_bundle: Callable[..., Path]) -> Fleet:
    fleet = Fleet(ServerConfig(data_dir=tmp_path / "fleet", trust_keys=[keypair["public_path"]], embedded_broker=False))
    register(fleet, make_bundle(1).read_bytes())
    return fleet


def _join(fleet: Fleet, device_id: str, **status: Any) -> None:
    devices.enroll(fleet, devices.create_enrollment_token(fleet), device_id)
    devices.record_status(fleet, device_id, {**CAPS, **status})


def _installed(fleet: Fleet, device_id: str) -> None:
    devices.record_status(fleet, device_id, {**CAPS, "active_model": "churn", "active_version": 1, "health": "ok",
                                             "last_install": {"version": 1, "result": "installed"}})


def _states(fleet: Fleet, rid: int) -> dict[str, str]:
    with fleet.session() as s:
        return {t.device_id: t.state for t in s.scalars(select(RolloutTarget).where(RolloutTarget.rollout_id == rid))}


def _first_by_order(rid: int, ids: list[str], k: int) -> set[str]:
    return set(sorted(ids, key=lambda d: rollouts._order(rid, d))[:k])


def test_steps_take_the_first_targets_in_order_and_joiners_get_theirs(tmp_path: Path, keypair: dict[str, Any],
                                                                        make_bundle: Callable[..., Path]) -> None:
    fleet = _fleet(tmp_path, keypair, make_bundle)
    try:
        ids = [f"d{i:02d}" for i in range(10)]
        for d in ids:
            _join(fleet, d)
        r = rollouts.start(fleet, "churn", 1, steps=[50, 100])
        st = _states(fleet, r.id)
        assert {d for d, v in st.items() if v == "assigned"} == _first_by_order(r.id, ids, 5), st
        assert sorted(v for v in st.values()) == ["assigned"] * 5 + ["pending"] * 5

        _join(fleet, "d10")  # mid-step: 11 targets, the step is now the first 6 of them
        ids.append("d10")
        rollouts.reconcile(fleet, rollout_id=r.id)
        st = _states(fleet, r.id)
        assert len(st) == 11 and {d for d, v in st.items() if v == "assigned"} == _first_by_order(r.id, ids, 6), st

        for d in [d for d, v in st.items() if v == "assigned"]:
            _installed(fleet, d)
        rollouts.reconcile(fleet, rollout_id=r.id)  # the step settles: the next one starts
        assert rollouts.status(fleet, r.id)["step_index"] == 1
        rollouts.reconcile(fleet, rollout_id=r.id)  # and is assigned
        st = _states(fleet, r.id)
        assert sorted(st.values()) == ["assigned"] * 5 + ["installed"] * 6, st
        for d in [d for d, v in st.items() if v == "assigned"]:
            _installed(fleet, d)
        rollouts.reconcile(fleet, rollout_id=r.id)
        rollouts.reconcile(fleet, rollout_id=r.id)
        assert rollouts.status(fleet, r.id)["state"] == "completed"
        with fleet.session() as s:
            ro = s.get(Rollout, r.id)
            assert ro is not None
            assert rollouts._actionable(s, ro, None, assign=True) == [], "a settled rollout gives a pass no target to read"

        _join(fleet, "late")  # after completion: the newest completed rollout still hands out its target
        rollouts.reconcile(fleet, rollout_id=r.id)
        assert _states(fleet, r.id)["late"] == "assigned"
        env = devices.current_assignment(fleet, "late")
        assert env is not None and env["assignment"]["version"] == 1 and env["assignment"]["serial"] == 1
    finally:
        fleet.engine.dispose()


def test_a_refusal_counts_only_when_reported_after_the_assignment(tmp_path: Path, keypair: dict[str, Any],
                                                                 make_bundle: Callable[..., Path]) -> None:
    fleet = _fleet(tmp_path, keypair, make_bundle)
    try:
        _join(fleet, "stale", last_install={"version": 1, "result": "refused: health check failed"})  # from an earlier attempt
        for d in ("a", "b", "c"):
            _join(fleet, d)
        r = rollouts.start(fleet, "churn", 1, steps=[100])
        for d in ("a", "b", "c"):
            _installed(fleet, d)
        rollouts.reconcile(fleet, rollout_id=r.id)
        st = rollouts.status(fleet, r.id)
        assert st["state"] == "running" and st["counts"] == {"assigned": 1, "installed": 3}, st

        devices.record_status(fleet, "stale", {**CAPS, "last_install": {"version": 1, "result": "refused: canary rows differ"}})
        rollouts.reconcile(fleet, rollout_id=r.id)
        st = rollouts.status(fleet, r.id)
        assert st["state"] == "halted" and "refused: canary rows differ" in st["reason"], st
        assert st["failed"] == [{"device_id": "stale", "reason": "refused: canary rows differ"}]
        assert st["counts"] == {"failed": 1, "installed": 3}, "the previous version is None: nothing to roll back to"
    finally:
        fleet.engine.dispose()
