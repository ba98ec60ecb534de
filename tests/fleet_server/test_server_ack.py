"""The server's telemetry ack (docs/protocol.md, "Server ack"): a batch leaves a device's outbox
only when the server says it stored it, never on a mere PUBACK.

Real fleet server (waitress + SQLite or PostgreSQL), real Mosquitto or the embedded broker, the
device runtime's real MqttLink, Outbox and Agent. Shown here:

- the ack names the batch id and every id stored, for batches with and without ``batch_id``;
- a refused batch gets a final ``rejected`` ack with its reason and ids (dropped, counted, not
  resent), and the ingest keeps going;
- a resent batch is acked again and adds no row (idempotent insert on SQLite and PostgreSQL);
- Mosquitto SIGKILLed mid-flush under real agents (persistence off, so everything it had
  PUBACKed and the server's session die with it): every id accepted by the outboxes is stored
  exactly once and the outboxes drain.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest
from sqlalchemy import func, select

from fleet_server.db import TelemetryRecord
from runtimes.python.agent import Agent, AgentConfig
from runtimes.python.outbox import Outbox
from runtimes.python.transport import MqttLink
from tests.fleet_server.conftest import Api, db_url, enroll, fresh_pg, make_server, wait_for  # noqa: F401 - fixtures
from tests.support.mqtt_broker import Mosquitto


@pytest.fixture()
def broker(tmp_path: Path) -> Any:
    b = Mosquitto(tmp_path).start()
    yield b
    b.stop()


def _rows(server: Any, device_id: str | None = None) -> tuple[int, int]:
    """(rows, distinct ids) stored, for one device or all."""
    with server.fleet.session() as s:
        q = select(func.count(), func.count(func.distinct(TelemetryRecord.id))).select_from(TelemetryRecord)
        if device_id:
            q = q.where(TelemetryRecord.device_id == device_id)
        n, d = s.execute(q).one()
    return int(n), int(d)


def _msg(i: int, score: Any = 0.5) -> dict[str, Any]:
    return {"id": uuid.uuid4().hex, "kind": "prediction", "created": time.time(),
            "body": {"model": "churn", "model_version": 1, "score": score, "label": i % 2}}


class AckClient:
    """A device's MqttLink collecting the server's acks."""

    def __init__(self, cred: dict[str, Any]) -> None:
        self.acks: list[dict[str, Any]] = []
        self.link = MqttLink(cred["mqtt"], cred["device_id"], cred["token"], on_assignment=lambda _p: None,
                             on_ack=lambda p: self.acks.append(json.loads(p)), reconnect_min=1, reconnect_max=2)
        self.link.start()
        wait_for(self.link.connected.is_set, timeout=15, what="device connected and subscribed")

    def send(self, batch: dict[str, Any]) -> dict[str, Any]:
        ids = {m["id"] for m in batch["messages"]}
        assert self.link.publish("telemetry", batch, timeout=10), "no PUBACK"

        def mine() -> dict[str, Any] | None:
            for a in self.acks:
                if (batch.get("batch_id") and a.get("batch_id") == batch["batch_id"]) or (ids and set(a.get("ids") or []) == ids):
                    return a
            return None
        return wait_for(mine, timeout=15, what=f"the server's ack of batch {batch.get('batch_id')}")

    def close(self) -> None:
        self.link.stop()


def _ack_protocol(server: Any, device_id: str) -> None:
    api = Api(server)
    cred = enroll(api, device_id)
    dev = AckClient(cred)
    try:
        good = {"batch_id": uuid.uuid4().hex, "device_id": device_id, "messages": [_msg(i) for i in range(50)]}
        ack = dev.send(good)
        assert ack["result"] == "stored" and ack["batch_id"] == good["batch_id"]
        assert sorted(ack["ids"]) == sorted(m["id"] for m in good["messages"])
        assert _rows(server, device_id) == (50, 50), "acked means stored: the rows are there when the ack arrives"

        plain = {"device_id": device_id, "messages": [_msg(i) for i in range(10)]}  # no batch_id: acked by ids
        ack = dev.send(plain)
        assert ack["result"] == "stored" and ack["batch_id"] is None and len(ack["ids"]) == 10

        bad = {"batch_id": uuid.uuid4().hex, "device_id": device_id, "messages": [_msg(0), _msg(1, score="high")]}
        ack = dev.send(bad)
        assert ack["result"] == "rejected" and ack["batch_id"] == bad["batch_id"], ack
        assert "score" in ack["reason"] and sorted(ack["ids"]) == sorted(m["id"] for m in bad["messages"]), ack

        again = dev.send(good)  # a resend after a lost ack: acked again, no new row
        assert again["result"] == "stored" and sorted(again["ids"]) == sorted(m["id"] for m in good["messages"])
        assert _rows(server, device_id) == (60, 60), "a resent batch added rows"
    finally:
        dev.close()


def test_server_ack_on_mosquitto_stored_rejected_and_resent(broker: Mosquitto, make_server: Any, db_url: str | None) -> None:
    _ack_protocol(make_server(mqtt_url=broker.url, db_url=db_url), "ack-mosq")


def test_server_ack_on_embedded_broker(make_server: Any) -> None:
    _ack_protocol(make_server(embedded_broker=True, embedded_mqtt_port=0), "ack-emb")


def test_outbox_in_flight_rules(tmp_path: Path) -> None:
    """A published batch is in flight (not handed out again) until the server's ack; no ack within
    the timeout, or a new connection, makes it pending again; a rejection is dropped and counted."""
    ob = Outbox(tmp_path / "o.sqlite")
    ids = ob.put_many("prediction", [{"i": i} for i in range(10)])
    first = ob.pending(4)
    bid = ob.send(first)
    assert [m.id for m in ob.pending(100)] == ids[4:] and ob.inflight() == 1 and ob.depth() == 10
    assert ob.expire(60.0) == 0 and ob.inflight() == 1
    assert ob.expire(0.0) == 4 and [m.id for m in ob.pending(100)] == ids, "timed out: pending again, in order"
    bid = ob.send(ob.pending(4))
    second = ob.send(ob.pending(3))
    assert ob.requeue_all() == 7 and ob.inflight() == 0
    bid = ob.send(ob.pending(4))
    second = ob.send(ob.pending(3))
    assert ob.server_ack({"batch_id": bid, "result": "stored", "ids": ids[:4]}) == 4
    assert ob.depth() == 6 and ob.inflight() == 1
    # a rejected batch of 3 is resent in halves; only a message rejected alone is dropped (counted)
    assert ob.server_ack({"batch_id": second, "result": "rejected", "reason": "x", "ids": ids[4:7]}) == 0
    assert ob.depth() == 6 and ob.inflight() == 0 and [m.id for m in ob.pending(100)] == [ids[4]]
    one = ob.send(ob.pending(100))
    assert ob.server_ack({"batch_id": one, "result": "stored", "ids": [ids[4]]}) == 1
    assert [m.id for m in ob.pending(100)] == [ids[5]]
    one = ob.send(ob.pending(100))
    assert ob.server_ack({"batch_id": one, "result": "rejected", "reason": "x", "ids": []}) == 1, \
        "a rejection naming no ids applies to the in-flight batch it names"
    assert ob.depth() == 4 and ob.stats()["dropped_rejected"] == 1
    assert [m.id for m in ob.pending(100)] == [ids[6]], "still capped to 1 after its batch was rejected"
    ob.server_ack({"batch_id": ob.send(ob.pending(100)), "result": "stored", "ids": [ids[6]]})
    assert [m.id for m in ob.pending(100)] == ids[7:], "uncapped messages go in full batches again"
    ob.server_ack({"batch_id": ob.send(ob.pending(100)), "result": "stored", "ids": ids[7:]})
    assert ob.depth() == 0 and ob.stats()["dropped_rejected"] == 1
    ids = ob.put_many("prediction", [{"i": i} for i in range(3)])
    ob.send(ob.pending(3))
    assert ob.server_ack({"batch_id": None, "result": "stored", "ids": ids}) == 3 and ob.inflight() == 0, "acked by ids alone"
    # no ack at all: each expiry doubles the wait (a slow server is not buried under resends); an ack resets it
    ids = ob.put_many("prediction", [{"i": i} for i in range(3)])
    ob.send(ob.pending(3))
    time.sleep(0.6)
    assert ob.expire(0.5) == 3
    ob.send(ob.pending(3))
    time.sleep(0.6)
    assert ob.expire(0.5) == 0, "the second wait is 1.0 s, not 0.5 s"
    time.sleep(0.5)
    assert ob.expire(0.5) == 3
    bid = ob.send(ob.pending(3))
    assert ob.server_ack({"batch_id": bid, "result": "stored", "ids": ids}) == 3
    ids = ob.put_many("prediction", [{"i": 0}])
    ob.send(ob.pending(3))
    time.sleep(0.6)
    assert ob.expire(0.5) == 1, "an ack reset the wait to 0.5 s"
    ob.close()


@pytest.mark.timeout(180)
def test_mosquitto_sigkill_mid_flush_loses_nothing_acknowledged(tmp_path: Path, make_server: Any,
                                                                make_bundle: Callable[..., Path]) -> None:
    """Before the server ack the agent deleted a batch on Mosquitto's PUBACK, and a broker SIGKILL
    lost what Mosquitto had acknowledged (the chaos run: 1,210 of 3,080). Now: 0 lost, 0 dups."""
    broker = Mosquitto(tmp_path).start()
    server = make_server(mqtt_url=broker.url)
    api = Api(server)
    agents: list[tuple[Agent, threading.Thread]] = []
    per, n = 1500, 3
    try:
        sent: set[str] = set()
        for k in range(n):
            cred = enroll(api, f"kill-{k}")
            path = tmp_path / f"cred-{k}.json"
            path.write_text(json.dumps(cred))
            cfg = AgentConfig.from_credential(path, data_dir=tmp_path / "devices" / f"kill-{k}", poll_seconds=0.5, status_seconds=2.0,
                                              tick_seconds=0.02, backoff_base=0.05, backoff_cap=0.5, mqtt_reconnect_max=1,
                                              ack_timeout=2.0, batch_size=50)
            agent = Agent(cfg)
            sent |= set(agent.outbox.put_many("prediction", [
                {"device_id": cfg.device_id, "model": "churn", "model_version": 1, "score": 0.5, "label": 1, "entity_id": f"{k}-{i}"}
                for i in range(per)]))
            t = threading.Thread(target=agent.run, kwargs={"install_signal_handlers": False}, daemon=True)
            agents.append((agent, t))
        for _, t in agents:
            t.start()
        wait_for(lambda: _rows(server)[0] >= per * n * 0.25, timeout=60, what="a quarter stored before the kill")
        assert broker.proc is not None
        os.kill(broker.proc.pid, signal.SIGKILL)
        broker.proc.wait(10)
        at_kill = _rows(server)[0]
        assert at_kill < per * n, "the flush was over before the kill: nothing was tested"
        time.sleep(3.0)  # long enough for the bridge's reconnect backoff to lag behind the devices' 1 s
        broker.start()  # same port, empty: no session, no subscriptions, nothing it had acknowledged
        wait_for(lambda: all(a.outbox.depth() == 0 for a, _ in agents), timeout=90, what="every outbox drained")
        rows, distinct = _rows(server)
        with server.fleet.session() as s:
            stored = set(s.scalars(select(TelemetryRecord.id)))
        lost = sent - stored
        assert not lost, f"{len(lost)} of {len(sent)} ids lost across a Mosquitto SIGKILL at {at_kill} stored"
        assert rows == distinct == len(sent), f"{rows} rows for {distinct} ids ({len(sent)} sent)"
        assert not any(a.outbox.stats().get("dropped_rejected") for a, _ in agents)
        print(f"\nMosquitto SIGKILL at {at_kill}/{len(sent)} stored: sent {len(sent)}, stored {distinct}, rows {rows}, lost 0")
    finally:
        for a, t in agents:
            a.stop()
        for a, t in agents:
            t.join(10)
        broker.stop()


def _agent(tmp_path: Path, cred: dict[str, Any], **kw: Any) -> tuple[Agent, threading.Thread]:
    path = tmp_path / f"cred-{cred['device_id']}.json"
    path.write_text(json.dumps(cred))
    cfg = AgentConfig.from_credential(path, data_dir=tmp_path / "devices" / cred["device_id"], poll_seconds=0.5, status_seconds=2.0,
                                      tick_seconds=0.02, backoff_base=0.05, backoff_cap=0.5, mqtt_reconnect_max=1, **kw)
    agent = Agent(cfg)
    return agent, threading.Thread(target=agent.run, kwargs={"install_signal_handlers": False}, daemon=True)


@pytest.mark.parametrize("kind", ["mosquitto", "embedded"])
def test_agent_rejected_batch_is_halved_until_the_bad_message_is_alone(tmp_path: Path, make_server: Any, kind: str) -> None:
    """A batch the server refuses over MQTT is not resent forever and does not take its good
    messages down with it: the agent resends it in halves, and drops only the message the server
    rejects alone (counted as dropped_rejected), as over HTTP."""
    broker = Mosquitto(tmp_path).start() if kind == "mosquitto" else None
    server = make_server(mqtt_url=broker.url) if broker else make_server(embedded_broker=True, embedded_mqtt_port=0)
    cred = enroll(Api(server), f"rej-{kind}")
    agent, t = _agent(tmp_path, cred, ack_timeout=5.0)
    body = {"device_id": cred["device_id"], "model": "churn", "model_version": 1, "label": 1}
    good = agent.outbox.put_many("prediction", [dict(body, score=0.5, entity_id=f"g{i}") for i in range(20)])
    bad = agent.outbox.put("prediction", dict(body, score="high"))
    good += agent.outbox.put_many("prediction", [dict(body, score=0.5, entity_id=f"h{i}") for i in range(20)])
    t.start()
    try:
        wait_for(lambda: agent.outbox.depth() == 0, timeout=30, what="the outbox drained")
        with server.fleet.session() as s:
            stored = set(s.scalars(select(TelemetryRecord.id).where(TelemetryRecord.device_id == cred["device_id"])))
        assert stored == set(good) and bad not in stored
        assert agent.outbox.stats().get("dropped_rejected") == 1, agent.outbox.stats()
        assert "score" in (agent.last_telemetry_error or ""), agent.last_telemetry_error
    finally:
        agent.stop()
        t.join(10)
        if broker:
            broker.stop()
