"""Staged rollouts end to end: real Mosquitto, real device agents, a server restart mid-rollout."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from tests.fleet_server.conftest import Api, enroll, start_agent, wait_for
from tests.support.mqtt_broker import Mosquitto, free_port


@pytest.fixture()
def broker(tmp_path: Path) -> Any:
    b = Mosquitto(tmp_path).start()
    yield b
    b.stop()


def _rollout(api: Api, body: dict[str, Any]) -> dict[str, Any]:
    code, r, _ = api("POST", "/api/v1/rollouts", body)
    assert code == 201, r
    return r


def _wait_rollout(api: Api, rid: int, states: set[str], timeout: float = 120) -> dict[str, Any]:
    return wait_for(lambda: (lambda r: r if r["state"] in states else None)(api("GET", f"/api/v1/rollouts/{rid}")[1]), timeout=timeout,
                    what=f"rollout {rid} to reach {states}", every=0.25)


def test_staged_rollout_to_50_agents_survives_a_server_restart(tmp_path: Path, broker: Mosquitto, make_server: Any,
                                                                 make_bundle: Callable[..., Path]) -> None:
    port = free_port()
    data = tmp_path / "fleet"
    server = make_server(data_dir=data, mqtt_url=broker.url, port=port, public_url=f"http://127.0.0.1:{port}")
    api = Api(server)
    assert api("POST", "/api/v1/models", raw=make_bundle(1).read_bytes())[0] == 201
    agents = []
    try:
        for i in range(50):
            cred = enroll(api, f"gw-{i:03d}", group="stores")
            agents.append(start_agent(tmp_path, cred, tick_seconds=0.1))
        wait_for(lambda: all(d["capabilities"] for d in api("GET", "/api/v1/devices")[1]["devices"]), what="every device reported capabilities")
        r1 = _rollout(api, {"model": "churn", "version": 1, "steps": [100], "selector": {"groups": ["stores"]}})
        _wait_rollout(api, r1["id"], {"completed"})

        assert api("POST", "/api/v1/models", raw=make_bundle(2).read_bytes())[0] == 201
        r2 = _rollout(api, {"model": "churn", "steps": [10, 50, 100]})
        assert r2["version"] == 2
        seen_steps = set()

        def in_second_step() -> bool:
            st = api("GET", f"/api/v1/rollouts/{r2['id']}")[1]
            seen_steps.add(st["step_index"])
            return st["step_index"] >= 1

        wait_for(in_second_step, what="the rollout to reach its 50% step")
        first = api("GET", f"/api/v1/rollouts/{r2['id']}")[1]
        assert first["counts"].get("installed", 0) >= 5, "the 10% step (5 devices) completed before the next"

        server.stop()  # restart mid-rollout: everything the server knows comes back from the database
        server = make_server(data_dir=data, mqtt_url=broker.url, port=port, public_url=f"http://127.0.0.1:{port}")
        api = Api(server)
        done = _wait_rollout(api, r2["id"], {"completed", "halted"})
        assert done["state"] == "completed", done
        assert done["counts"] == {"installed": 50}
        events = [e["event"] for e in done["history"]]
        assert events.count("step_started") == 3 and events[-1] == "completed"
        wait_for(lambda: all(a.scorer and a.scorer.version == 2 for a, _ in agents), what="every agent running v2")
        devices = api("GET", "/api/v1/devices")[1]["devices"]
        assert len(devices) == 50 and all(d["active_version"] == 2 for d in devices)
    finally:
        for a, t in agents:
            a.stop()
        for a, t in agents:
            t.join(10)


def test_health_check_failure_on_canary_halts_and_rolls_back(tmp_path: Path, broker: Mosquitto, make_server: Any,
                                                              make_bundle: Callable[..., Path], db_url: str | None) -> None:
    server = make_server(mqtt_url=broker.url, db_url=db_url)
    api = Api(server)
    api("POST", "/api/v1/models", raw=make_bundle(1).read_bytes())
    agents = [start_agent(tmp_path, enroll(api, f"d{i}")) for i in range(10)]
    try:
        wait_for(lambda: all(d["capabilities"] for d in api("GET", "/api/v1/devices")[1]["devices"]), what="capabilities")
        _wait_rollout(api, _rollout(api, {"model": "churn", "steps": [100]})["id"], {"completed"})

        def poison(m: dict[str, Any]) -> None:  # validly signed, but its canary rows cannot be reproduced
            for row in m["canary"]["rows"]:
                row["probabilities"] = [0.5, 0.5]

        api("POST", "/api/v1/models", raw=make_bundle(2, edit=poison).read_bytes())
        r = _rollout(api, {"model": "churn", "version": 2, "steps": [10, 100], "gates": {"max_failure_ratio": 0.0}})
        halted = _wait_rollout(api, r["id"], {"halted", "completed"})
        assert halted["state"] == "halted" and "health check" in halted["reason"]
        assert halted["step_index"] == 0, "halted at the canary step"
        assert halted["counts"].get("rolled_back") == 1 and halted["counts"].get("pending") == 9
        shows = [api("GET", f"/api/v1/devices/{d['device_id']}")[1] for d in api("GET", "/api/v1/devices")[1]["devices"]]
        rolled = [s for s in shows if s["assignment"]["rollback"]]
        assert len(rolled) == 1 and rolled[0]["assignment"]["version"] == 1, "the canary got a signed rollback order"
        assert all(a.scorer.version == 1 for a, _ in agents), "no device runs the bad model"
        assert api("POST", f"/api/v1/rollouts/{r['id']}/resume")[0] == 400
    finally:
        for a, t in agents:
            a.stop()
        for a, t in agents:
            t.join(10)


def test_default_server_with_embedded_broker(tmp_path: Path, make_server: Any, make_bundle: Callable[..., Path]) -> None:
    """`edgefleet server` defaults: SQLite and the embedded amqtt broker with per-device ACLs."""
    server = make_server(embedded_broker=True, embedded_mqtt_port=0)
    api = Api(server)
    assert server.fleet.mqtt_url_for_devices.startswith("mqtt://127.0.0.1:")
    api("POST", "/api/v1/models", raw=make_bundle(1).read_bytes())
    creds = [enroll(api, f"e{i}") for i in range(5)]
    assert all(c["mqtt"] == server.fleet.mqtt_url_for_devices for c in creds)
    agents = [start_agent(tmp_path, c) for c in creds]
    try:
        wait_for(lambda: all(a.mqtt and a.mqtt.connected.is_set() for a, _ in agents), what="agents connected with their credentials")
        wait_for(lambda: all(d["capabilities"] for d in api("GET", "/api/v1/devices")[1]["devices"]), what="capabilities")
        done = _wait_rollout(api, _rollout(api, {"model": "churn", "steps": [20, 100]})["id"], {"completed", "halted"})
        assert done["state"] == "completed" and done["counts"] == {"installed": 5}
        assert all(a.scorer.version == 1 and a.status()["transport"] == "mqtt" for a, _ in agents)
    finally:
        for a, t in agents:
            a.stop()
        for a, t in agents:
            t.join(10)


def test_production_mosquitto_with_server_managed_dynsec_accounts(tmp_path: Path, make_server: Any, make_bundle: Callable[..., Path]) -> None:
    """--mqtt with --mqtt-admin: enrollment creates per-device Mosquitto accounts; ACLs refuse cross-device reads."""
    import paho.mqtt.client as mqtt

    from fleet_server.mqtt.dynsec import DynsecBroker

    broker = DynsecBroker(tmp_path / "mosq").start()
    agents = []
    try:
        server = make_server(mqtt_url=broker.url, mqtt_admin=(broker.admin_user, broker.admin_password))
        api = Api(server)
        api("POST", "/api/v1/models", raw=make_bundle(1).read_bytes())
        creds = [enroll(api, f"m{i}") for i in range(3)]
        agents = [start_agent(tmp_path, c) for c in creds]
        wait_for(lambda: all(a.mqtt and a.mqtt.connected.is_set() for a, _ in agents), what="agents on Mosquitto with server-made accounts")
        wait_for(lambda: all(d["capabilities"] for d in api("GET", "/api/v1/devices")[1]["devices"]), what="capabilities")
        done = _wait_rollout(api, _rollout(api, {"model": "churn", "steps": [100]})["id"], {"completed", "halted"})
        assert done["state"] == "completed" and done["counts"] == {"installed": 3}

        for ag, t in agents:  # free device m0's client id for the probe below
            ag.stop()
            t.join(10)
        a, b = creds[0], creds[1]
        codes: list[Any] = []
        got: list[str] = []
        probe = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"edgefleet-device-{a['device_id']}")
        probe.username_pw_set(a["device_id"], a["token"])
        probe.on_subscribe = lambda c, u, mid, rcs, p=None: codes.extend(rc.is_failure for rc in rcs)
        probe.on_message = lambda c, u, m: got.append(m.topic)
        probe.connect("127.0.0.1", int(broker.url.rsplit(":", 1)[1]))
        probe.loop_start()
        probe.subscribe(f"edgefleet/v1/devices/{b['device_id']}/assignment", qos=1)
        probe.subscribe(f"edgefleet/v1/devices/{a['device_id']}/assignment", qos=1)
        wait_for(lambda: len(codes) == 2 and got, timeout=10, what="both SUBACKs and A's own retained assignment")
        probe.loop_stop()
        probe.disconnect()
        assert codes == [True, False], "B's topic refused (SUBACK failure), A's own granted"
        assert got == [f"edgefleet/v1/devices/{a['device_id']}/assignment"]
    finally:
        for ag, t in agents:
            ag.stop()
        for ag, t in agents:
            t.join(10)
        broker.stop()
