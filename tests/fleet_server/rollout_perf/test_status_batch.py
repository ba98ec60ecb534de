"""Statuses arrive over MQTT in groups stored in one transaction, their senders loaded by one
SELECT (issue 13's fan-out). One malformed status, or one from a device that is not enrolled, in
the middle of a group is counted and named, and every other status of the group is stored and
acknowledged; two statuses of one device in a group are stored in order, the later one winning
(a real IngestQueue on a real SQLite fleet database)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import select

from fleet_server import devices
from fleet_server.core import Fleet, ServerConfig
from fleet_server.db import Counter, Device
from fleet_server.mqtt.bridge import IngestQueue
from tests.fleet_server.conftest import wait_for


def _status(version: int | None, **extra: Any) -> bytes:
    return json.dumps({"active_model": "churn" if version else None, "active_version": version, "health": "ok", **extra}).encode()


def test_one_bad_status_in_a_group_is_named_and_the_rest_are_stored(tmp_path: Path, keypair: dict[str, Any]) -> None:
    fleet = Fleet(ServerConfig(data_dir=tmp_path / "fleet", trust_keys=[keypair["public_path"]], embedded_broker=False))
    try:
        ids = [devices.enroll(fleet, devices.create_enrollment_token(fleet), f"dev-{i}")["device_id"] for i in range(6)]
        q = IngestQueue(fleet)
        acked: list[int] = []
        items = [(ids[0], _status(1)), (ids[1], _status(1)),
                 (ids[2], _status(1, health="x" * 5000)),  # over the field's length limit
                 (ids[3], b"{not json"), ("dev-unknown", _status(1)),
                 (ids[4], _status(1)), (ids[5], _status(1)), (ids[5], _status(2))]
        for k, (dev, payload) in enumerate(items):  # all queued before the worker starts: one group
            assert q.submit(f"edgefleet/v1/devices/{dev}/status", payload, lambda k=k: acked.append(k))
        q.start()
        wait_for(lambda: len(acked) == len(items), timeout=10, what="every status acknowledged")
        q.stop()
        with fleet.session() as s:
            stored = {d.device_id: d.active_version for d in s.scalars(select(Device))}
            rejected = s.get(Counter, "status_rejected")
        assert stored == {ids[0]: 1, ids[1]: 1, ids[2]: None, ids[3]: None, ids[4]: 1, ids[5]: 2}, stored
        assert rejected is not None and rejected.value == 3
        assert q.queue.empty() and q.queued_bytes == 0
    finally:
        fleet.engine.dispose()


def test_the_bad_status_is_named_with_its_field(tmp_path: Path, keypair: dict[str, Any]) -> None:
    fleet = Fleet(ServerConfig(data_dir=tmp_path / "fleet", trust_keys=[keypair["public_path"]], embedded_broker=False))
    try:
        good, bad = (devices.enroll(fleet, devices.create_enrollment_token(fleet), d)["device_id"] for d in ("dev-good", "dev-bad"))
        q = IngestQueue(fleet)
        acked: list[str] = []
        assert q.submit(f"edgefleet/v1/devices/{bad}/status", _status(1, active_version="seven"), lambda: acked.append(bad))
        assert q.submit(f"edgefleet/v1/devices/{good}/status", _status(1), lambda: acked.append(good))
        q.start()
        wait_for(lambda: len(acked) == 2, timeout=10, what="both acknowledged")
        q.stop()
        assert q.last_error is not None and f"devices/{bad}/status" in q.last_error and "active_version" in q.last_error, q.last_error
        with fleet.session() as s:
            assert (s.get(Device, good).active_version, s.get(Device, bad).active_version) == (1, None)  # type: ignore[union-attr]
    finally:
        fleet.engine.dispose()
