"""SIGTERM: the agent closes its open sketch window into the outbox, then makes a bounded final
flush before it exits; what is not sent stays in the outbox.

Real ``edgefleet agent run`` subprocesses against a real fleet server (waitress + SQLite) and a
real Mosquitto; the unreachable case points the agent at a loopback port nothing listens on, and
the bound is shown against a server that accepts connections and never answers.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from sqlalchemy import select

from edgefleet import keys
from fleet_server.db import TelemetryRecord
from runtimes.python.agent import Agent, AgentConfig
from runtimes.python.store import ModelStore
from runtimes.python.transport import MqttLink
from tests.fleet_server.conftest import Api, enroll, make_server, wait_for  # noqa: F401 - fixture
from tests.support.mqtt_broker import Mosquitto, free_port

DEFAULT_BOUND = AgentConfig.final_flush_seconds  # the CLI runs with the default


@pytest.fixture()
def broker(tmp_path: Path) -> Any:
    b = Mosquitto(tmp_path).start()
    yield b
    b.stop()


def _run_agent(cred_path: Path, data: Path, inbox: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as fh:
        return subprocess.Popen([sys.executable, "-m", "edgefleet_cli.main", "--log-format", "json", "agent", "run",
                                 "--credential", str(cred_path), "--data-dir", str(data), "--input-dir", str(inbox),
                                 "--poll-seconds", "0.5"], stdin=subprocess.DEVNULL, stderr=fh)


def _logs(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            out.append({"level": "?", "logger": "?", "message": line})
    return out


def _drop(inbox: Path, name: str, records: list[dict[str, Any]]) -> None:
    (inbox / f"{name}.tmp").write_text("".join(json.dumps(r) + "\n" for r in records))
    os.replace(inbox / f"{name}.tmp", inbox / name)


def _outbox(path: Path) -> dict[str, str]:
    """id -> kind of every message in the outbox, read without writing to it."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT id, kind FROM outbox").fetchall())
    finally:
        db.close()


def _stop(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, float]:
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=timeout)
    return rc, time.monotonic() - t0


def _telemetry(server: Any, device_id: str) -> list[TelemetryRecord]:
    with server.fleet.session() as s:
        return list(s.scalars(select(TelemetryRecord).where(TelemetryRecord.device_id == device_id)))


def test_sigterm_delivers_the_last_sketch_window_to_the_real_server(tmp_path: Path, broker: Mosquitto, make_server: Any,
                                                                    make_bundle: Callable[..., Path]) -> None:
    server = make_server(mqtt_url=broker.url)
    api = Api(server)
    assert api("POST", "/api/v1/models", raw=make_bundle(1).read_bytes())[0] == 201
    cred = enroll(api, "term-1")
    cred_path = tmp_path / "cred.json"
    cred_path.write_text(json.dumps(cred))
    data, inbox, log = tmp_path / "device", tmp_path / "inbox", tmp_path / "agent.log"
    inbox.mkdir()
    proc = _run_agent(cred_path, data, inbox, log)
    try:
        wait_for(lambda: api("GET", "/api/v1/devices/term-1")[1].get("capabilities"), what="the agent's first status")
        code, r, _ = api("POST", "/api/v1/rollouts", {"model": "churn", "version": 1, "steps": [100]})
        assert code == 201, r
        wait_for(lambda: api("GET", "/api/v1/devices/term-1")[1].get("active_version") == 1, what="v1 installed on the agent")
        rows = json.loads(next((data / "models" / "slots").glob("*/manifest.json")).read_text())["canary"]["rows"]
        records = [{**rows[i % len(rows)]["input"], "_entity_id": f"c{i}"} for i in range(25)]
        _drop(inbox, "batch.jsonl", records)
        wait_for(lambda: (inbox / "scored" / "batch.jsonl").exists(), what="the inbox file scored")
        wait_for(lambda: sum(t.kind == "prediction" for t in _telemetry(server, "term-1")) == 25, what="the 25 predictions stored")
        assert not [t for t in _telemetry(server, "term-1") if t.kind == "sketch"], "the window (1 h) is still open"

        rc, seconds = _stop(proc, timeout=DEFAULT_BOUND + 15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    logs = _logs(log)
    assert rc == 0, logs[-20:]
    assert seconds < DEFAULT_BOUND + 5, f"exit took {seconds:.1f}s"
    sketches = [t for t in _telemetry(server, "term-1") if t.kind == "sketch"]
    assert len(sketches) == 1, "the last window reached the server without a restart of the agent"
    assert sketches[0].body["n"] == 25 and sketches[0].model_version == 1
    assert _outbox(data / "outbox.sqlite") == {}, "nothing left behind"
    final = [e for e in logs if e["message"].startswith("final flush: ")]
    assert len(final) == 1 and final[0]["level"] == "INFO" and final[0]["logger"] == "runtimes.python.flushing", final
    # the sketch, plus any prediction whose server ack was still on its way at SIGTERM
    m = re.match(r"final flush: sent (\d+), kept 0 in the outbox \(the outbox is empty\) in ", final[0]["message"])
    assert m and int(m.group(1)) >= 1, final
    msgs = [e["message"] for e in logs]
    assert msgs.index("closed the open sketch window into the outbox") < msgs.index(final[0]["message"])
    assert not [e for e in logs if e["level"] == "?" and "Traceback" in e["message"]]


def test_sigterm_with_the_server_unreachable_exits_within_the_bound_and_keeps_the_outbox(
        tmp_path: Path, keypair: dict[str, Any], make_bundle: Callable[..., Path]) -> None:
    data, inbox, log = tmp_path / "device", tmp_path / "inbox", tmp_path / "agent.log"
    inbox.mkdir()
    ModelStore(data / "models", keypair["public"]).install(make_bundle(1))
    keys.generate_keypair(tmp_path / "server-key")
    dead = free_port()  # nothing listens on either
    cred_path = tmp_path / "cred.json"
    cred_path.write_text(json.dumps({
        "device_id": "term-2", "token": "t", "server": f"http://127.0.0.1:{dead}", "mqtt": f"mqtt://127.0.0.1:{free_port()}",
        "publisher_keys": [keypair["public_path"].read_text()],
        "assignment_keys": [(tmp_path / "server-key" / "public.pem").read_text()]}))
    proc = _run_agent(cred_path, data, inbox, log)
    try:
        rows = json.loads(next((data / "models" / "slots").glob("*/manifest.json")).read_text())["canary"]["rows"]
        _drop(inbox, "batch.jsonl", [rows[i % len(rows)]["input"] for i in range(10)])
        wait_for(lambda: (inbox / "scored" / "batch.jsonl").exists(), what="the inbox file scored offline")
        wait_for(lambda: len(_outbox(data / "outbox.sqlite")) == 10, what="10 predictions in the outbox")
        before = _outbox(data / "outbox.sqlite")
        rc, seconds = _stop(proc, timeout=DEFAULT_BOUND + 15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    logs = _logs(log)
    assert rc == 0, logs[-20:]
    assert seconds < DEFAULT_BOUND + 2, f"exit took {seconds:.1f}s, over the {DEFAULT_BOUND}s bound"
    after = _outbox(data / "outbox.sqlite")
    assert before.items() <= after.items(), "every message of before SIGTERM is still in the outbox"
    assert sorted(after.values()) == ["prediction"] * 10 + ["sketch"], "plus the closed window"
    final = [e["message"] for e in logs if e["message"].startswith("final flush: ")]
    assert len(final) == 1 and final[0].startswith(f"final flush: sent 0, kept 11 in the outbox (cannot reach the fleet server at "
                                                   f"http://127.0.0.1:{dead}"), final


class Blackhole:
    """A loopback listener that accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self) -> None:
        self.sock.close()


def test_the_final_flush_ends_within_its_bound_when_the_server_hangs(tmp_path: Path, keypair: dict[str, Any],
                                                                      make_bundle: Callable[..., Path]) -> None:
    hole = Blackhole()
    cfg = AgentConfig(server=hole.url, device_id="term-3", token="t", data_dir=tmp_path / "device", trusted_keys=[keypair["public"]],
                      final_flush_seconds=1.5)
    agent = Agent(cfg)
    try:
        agent.scorer = agent.store.install(make_bundle(1)).scorer
        assert agent.http.timeout == 10.0, "each request alone could wait 10 s"
        for row in agent.scorer.manifest["canary"]["rows"]:  # type: ignore[union-attr]
            agent.score(row["input"])
        agent.telemetry.flush_window()
        depth = agent.outbox.depth()
        t0 = time.monotonic()
        sent, kept, reason = agent.final_flush(cfg.final_flush_seconds)
        took = time.monotonic() - t0
        assert took < cfg.final_flush_seconds + 0.5, f"the final flush took {took:.2f}s"
        assert (sent, kept) == (0, depth) and agent.outbox.depth() == depth
        assert "timed out" in reason, reason
        assert agent.http.timeout == 10.0 and agent.http.client.timeout == 10.0, "the bound applies to the final flush only"
    finally:
        agent.outbox.close()
        hole.close()


def test_over_mqtt_without_the_servers_ack_the_final_flush_keeps_everything(tmp_path: Path, broker: Mosquitto, keypair: dict[str, Any],
                                                                             make_bundle: Callable[..., Path]) -> None:
    """The broker PUBACKs, but no fleet server is there to store and ack: a PUBACK is not delivery."""
    cfg = AgentConfig(server=f"http://127.0.0.1:{free_port()}", device_id="term-4", token=None, data_dir=tmp_path / "device",
                      trusted_keys=[keypair["public"]], mqtt=broker.url, final_flush_seconds=1.0)
    agent = Agent(cfg)
    agent.mqtt = MqttLink(broker.url, "term-4", None, on_assignment=lambda _p: None, on_ack=agent._on_server_ack)
    agent.mqtt.start()
    try:
        wait_for(agent.mqtt.connected.is_set, timeout=15, what="connected to Mosquitto")
        agent.scorer = agent.store.install(make_bundle(1)).scorer
        for row in agent.scorer.manifest["canary"]["rows"]:  # type: ignore[union-attr]
            agent.score(row["input"])
        agent.telemetry.flush_window()
        depth = agent.outbox.depth()
        t0 = time.monotonic()
        sent, kept, reason = agent.final_flush(cfg.final_flush_seconds)
        took = time.monotonic() - t0
        assert (sent, kept) == (0, depth) and agent.outbox.depth() == depth
        assert reason == "the 1s bound ran out; 1 batch(es) sent but not yet acknowledged by the server", reason
        assert cfg.final_flush_seconds <= took < cfg.final_flush_seconds + 0.5
    finally:
        agent.mqtt.stop()
        agent.outbox.close()


def test_sigterm_cuts_a_hanging_request_short_and_the_bound_counts_from_the_signal(tmp_path: Path, keypair: dict[str, Any],
                                                                                    make_bundle: Callable[..., Path]) -> None:
    """The server accepts connections and never answers: every request of the loop would wait its
    10 s timeout. SIGTERM interrupts the one in progress, and the final flush and the last status
    share what is left of the bound."""
    from runtimes.python.outbox import Outbox

    hole = Blackhole()
    data, log = tmp_path / "device", tmp_path / "agent.log"
    ModelStore(data / "models", keypair["public"]).install(make_bundle(1))
    box = Outbox(data / "outbox.sqlite")
    ids = box.put_many("outcome", [{"entity_id": f"c{i}", "label": 1, "observed_at": "2026-12-01T00:00:00Z"} for i in range(7)])
    box.close()
    keys.generate_keypair(tmp_path / "server-key")
    cred_path = tmp_path / "cred.json"
    cred_path.write_text(json.dumps({
        "device_id": "term-5", "token": "t", "server": hole.url, "publisher_keys": [keypair["public_path"].read_text()],
        "assignment_keys": [(tmp_path / "server-key" / "public.pem").read_text()]}))
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    proc = _run_agent(cred_path, data, inbox, log)
    try:
        wait_for(lambda: "agent term-5 starting: " in log.read_text(), what="the agent's start-up line")
        time.sleep(1.0)  # the first assignment poll is now waiting on the silent server
        rc, seconds = _stop(proc, timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        hole.close()
    logs = _logs(log)
    assert rc == 0, logs[-20:]
    assert seconds < DEFAULT_BOUND + 1.5, f"exit took {seconds:.1f}s after SIGTERM, over the {DEFAULT_BOUND}s bound"
    msgs = [e["message"] for e in logs]
    assert "SIGTERM cut a network wait short; stopping" in msgs, msgs
    final = [m for m in msgs if m.startswith("final flush: ")]
    assert len(final) == 1 and final[0].startswith(f"final flush: sent 0, kept 7 in the outbox (cannot reach the fleet server at {hole.url}"), final
    assert "timed out" in final[0], final
    assert set(_outbox(data / "outbox.sqlite")) == set(ids), "the outbox is intact"
