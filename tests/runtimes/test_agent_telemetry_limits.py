"""Telemetry that can never fit, or that the server refuses, never blocks the outbox.

Real fleet server (waitress + SQLite), real Mosquitto, real agents: 500 predictions whose
``gender`` is ``"x" * 10000`` (accepted by the model under ``unseen: ignore``) queued ahead of
100 normal ones.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Callable

import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import func, select

from edgefleet.protocol import MAX_BATCH_BYTES, MAX_FEATURE_CHARS
from fleet_server.db import TelemetryRecord
from runtimes.python.agent import Agent, AgentConfig
from tests.fleet_server.conftest import Api, enroll, make_server, wait_for  # noqa: F401 - make_server is a fixture
from tests.support.mqtt_broker import Mosquitto


@pytest.fixture()
def broker(tmp_path: Path) -> Any:
    b = Mosquitto(tmp_path).start()
    yield b
    b.stop()


def _agent(tmp_path: Path, cred: dict[str, Any], make_bundle: Callable[..., Path], **kw: Any) -> Agent:
    path = tmp_path / "cred.json"
    path.write_text(json.dumps(cred))
    cfg = AgentConfig.from_credential(path, data_dir=tmp_path / "device", poll_seconds=0.5, status_seconds=2.0, tick_seconds=0.05,
                                      backoff_base=0.05, backoff_cap=0.5, mqtt_reconnect_max=1, **kw)
    agent = Agent(cfg)
    res = agent.store.install(make_bundle(1))
    agent.scorer = res.scorer
    return agent


def _stored(server: Any, device_id: str) -> list[TelemetryRecord]:
    with server.fleet.session() as s:
        return list(s.scalars(select(TelemetryRecord).where(TelemetryRecord.device_id == device_id, TelemetryRecord.kind == "prediction")))


def _count(server: Any, device_id: str) -> int:
    with server.fleet.session() as s:
        return int(s.scalar(select(func.count()).select_from(TelemetryRecord).where(
            TelemetryRecord.device_id == device_id, TelemetryRecord.kind == "prediction")) or 0)


def _rows(agent: Agent, n: int) -> list[dict[str, Any]]:
    base = agent.scorer.manifest["canary"]["rows"]  # type: ignore[union-attr]
    return [dict(base[i % len(base)]["input"], tenure=i % 73) for i in range(n)]


def _score(agent: Agent) -> tuple[list[str], list[str]]:
    rows = _rows(agent, 600)
    for r in rows[:500]:
        r["gender"] = "x" * 10000
    for i, r in enumerate(rows):
        agent.score(r, entity_id=f"{'big' if i < 500 else 'ok'}-{i}")
    return [f"big-{i}" for i in range(500)], [f"ok-{i}" for i in range(500, 600)]


@pytest.mark.parametrize("transport", ["mqtt", "http"])
def test_huge_feature_values_are_bounded_and_nothing_blocks(tmp_path: Path, broker: Mosquitto, make_server: Any,
                                                           make_bundle: Callable[..., Path], transport: str) -> None:
    server = make_server(mqtt_url=broker.url) if transport == "mqtt" else make_server()
    api = Api(server)
    cred = enroll(api, "gw-big")
    if transport == "http":
        cred["mqtt"] = None
    sizes: list[int] = []
    watcher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="size-watcher")
    watcher.on_message = lambda c, u, m: sizes.append(len(m.payload))
    watcher.connect(broker.host, broker.port)
    watcher.loop_start()
    watcher.subscribe("edgefleet/v1/devices/gw-big/telemetry", qos=1)
    agent = _agent(tmp_path, cred, make_bundle)
    big, ok = _score(agent)
    assert agent.outbox.depth() == 600
    t = threading.Thread(target=agent.run, kwargs={"install_signal_handlers": False}, daemon=True)
    t0 = time.monotonic()
    t.start()
    try:
        wait_for(lambda: _count(server, "gw-big") >= 600, timeout=60, what="all 600 predictions stored")
        elapsed = time.monotonic() - t0
        rows = {r.entity_id: r for r in _stored(server, "gw-big")}
        assert set(ok) <= set(rows), "the 100 normal records queued behind arrived"
        assert set(big) <= set(rows), "the oversized ones arrived too, bounded"
        sample = rows[big[0]].body
        assert len(sample["features"]["gender"]) == MAX_FEATURE_CHARS and sample["truncated"] == ["gender"]
        assert "truncated" not in rows[ok[0]].body
        wait_for(lambda: agent.outbox.depth() == 0, timeout=10, what="an empty outbox")
        if transport == "mqtt":
            wait_for(lambda: sizes, timeout=5, what="the watcher saw the batches")
            assert max(sizes) <= MAX_BATCH_BYTES, f"a batch of {max(sizes)} bytes went out"
        print(f"\n{transport}: 600 stored in {elapsed:.1f}s, batches seen {len(sizes)}, largest {max(sizes, default=0)} bytes")
    finally:
        agent.stop()
        t.join(10)
        watcher.loop_stop()
        watcher.disconnect()


def test_http_refusals_drop_only_the_refused_message_and_unfit_ones_are_counted(
        tmp_path: Path, make_server: Any, make_bundle: Callable[..., Path]) -> None:
    server = make_server()
    api = Api(server)
    cred = enroll(api, "gw-bad")
    cred["mqtt"] = None
    agent = _agent(tmp_path, cred, make_bundle)
    rows = _rows(agent, 200)
    for i, r in enumerate(rows[:100]):
        agent.score(r, entity_id=f"a-{i}")
    # Messages an older agent could have queued: one the server refuses (an id over its 64
    # characters) and one larger than any batch may be. Written straight into the outbox.
    agent.outbox.put("prediction", {"model": "churn", "model_version": 1, "features": {"gender": "y" * (MAX_BATCH_BYTES + 10)}})
    db = agent.outbox._db
    db.execute("INSERT INTO outbox (id, kind, created, body, size) VALUES (?, 'prediction', ?, '{}', 2)", ("z" * 100, time.time()))
    agent.outbox._count += 1
    for i, r in enumerate(rows[100:]):
        agent.score(r, entity_id=f"b-{i}")
    assert agent.outbox.depth() == 202
    t = threading.Thread(target=agent.run, kwargs={"install_signal_handlers": False}, daemon=True)
    t.start()
    try:
        wait_for(lambda: _count(server, "gw-bad") >= 200, timeout=60, what="the 200 good predictions stored")
        wait_for(lambda: agent.outbox.depth() == 0, timeout=10, what="an empty outbox")
        stats = agent.outbox.stats()
        assert stats.get("dropped_rejected") == 1 and stats.get("dropped_oversized") == 1, stats
        assert _count(server, "gw-bad") == 200
        assert "refused by the server" in (agent.last_telemetry_error or "") or "dropped" in (agent.last_telemetry_error or "")
        wait_for(lambda: (agent.status()["outbox"].get("dropped_rejected") == 1), timeout=5, what="status reports the drop")
    finally:
        agent.stop()
        t.join(10)


def test_5xx_and_network_errors_keep_everything(tmp_path: Path, make_server: Any, make_bundle: Callable[..., Path]) -> None:
    """Refusal is only a payload 4xx: a server that is down loses nothing and drops nothing."""
    server = make_server()
    api = Api(server)
    cred = enroll(api, "gw-down")
    cred["mqtt"] = None
    cred["server"] = "http://127.0.0.1:9"  # nothing listens: connection refused
    agent = _agent(tmp_path, cred, make_bundle)
    for i, r in enumerate(_rows(agent, 50)):
        agent.score(r, entity_id=f"d-{i}")
    for _ in range(5):
        assert agent.flush_once() == 0
    assert agent.outbox.depth() == 50 and not any(k.startswith("dropped") and v for k, v in agent.outbox.stats().items())
    agent.outbox.close()
