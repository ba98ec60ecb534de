"""The sync agent against a real Mosquitto broker and a real HTTP protocol server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import paho.mqtt.client as mqtt
import pytest

from edgefleet import keys
from runtimes.python.agent import Agent, AgentConfig
from tests.support.mqtt_broker import Mosquitto, free_port
from tests.support.protocol_server import ProtocolServer, sign_assignment

DEVICE = "dev-1"
TOPIC = f"edgefleet/v1/devices/{DEVICE}"


def wait_for(cond: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture()
def broker(tmp_path: Path) -> Any:
    b = Mosquitto(tmp_path).start()
    yield b
    b.stop()


@pytest.fixture()
def server() -> Any:
    s = ProtocolServer().start()
    yield s
    s.stop()


class Watcher:
    """A test-side MQTT client: publishes assignments, collects status and telemetry."""

    def __init__(self, broker: Mosquitto) -> None:
        self.status: list[dict[str, Any]] = []
        self.telemetry_ids: dict[str, int] = {}
        self.kinds: dict[str, int] = {}
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"watcher-{os.getpid()}-{id(self)}")
        self.client.on_message = self._msg
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        r = self.client.subscribe([(f"{TOPIC}/status", 1), (f"{TOPIC}/telemetry", 1)])
        assert r[0] == mqtt.MQTT_ERR_SUCCESS
        time.sleep(0.2)

    def _msg(self, client: Any, userdata: Any, msg: Any) -> None:
        body = json.loads(msg.payload)
        with self.lock:
            if msg.topic.endswith("/status"):
                self.status.append(body)
            else:
                for m in body["messages"]:
                    self.telemetry_ids[m["id"]] = self.telemetry_ids.get(m["id"], 0) + 1
                    self.kinds[m["kind"]] = self.kinds.get(m["kind"], 0) + 1
        if msg.topic.endswith("/telemetry"):  # play the server: its ack is what empties the outbox
            ack = {"batch_id": body.get("batch_id"), "result": "stored", "ids": [m["id"] for m in body["messages"]]}
            client.publish(msg.topic.rsplit("/", 1)[0] + "/ack", json.dumps(ack), qos=1)

    def assign(self, envelope: dict[str, Any]) -> None:
        self.client.publish(f"{TOPIC}/assignment", json.dumps(envelope), qos=1, retain=True).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def make_agent(tmp_path: Path, server_url: str, keypair: dict[str, Any], mqtt_url: str | None = None, **kw: Any) -> Agent:
    cfg = AgentConfig(server=server_url, device_id=DEVICE, token="secret", data_dir=tmp_path / "device",
                      trusted_keys=[keypair["public"]], mqtt=mqtt_url, poll_seconds=0.3, status_seconds=0.5,
                      backoff_base=0.05, backoff_cap=0.5, tick_seconds=0.05, mqtt_reconnect_max=1, **kw)
    return Agent(cfg)


def start(agent: Agent) -> threading.Thread:
    t = threading.Thread(target=agent.run, kwargs={"install_signal_handlers": False}, daemon=True)
    t.start()
    return t


def assignment(server: ProtocolServer, archive: Path, version: int, serial: int, key: Any, rollback: bool = False, device: str = DEVICE) -> dict[str, Any]:
    sha, size = server.publish_bundle(archive.read_bytes())
    return sign_assignment({"device_id": device, "serial": serial, "model": "churn", "version": version, "bundle_sha256": sha,
                            "size": size, "url": f"/api/v1/artifacts/{sha}", "format": "onnx", "rollback": rollback,
                            "issued_at": "2026-11-29T00:00:00Z"}, key)


def test_mqtt_assignment_install_upgrade_refuse_and_rollback(tmp_path: Path, broker: Mosquitto, server: ProtocolServer,
                                                               keypair: dict[str, Any], make_bundle: Callable[..., Path]) -> None:
    watcher = Watcher(broker)
    agent = make_agent(tmp_path, server.url, keypair, broker.url)
    t = start(agent)
    try:
        key = keypair["private"]
        watcher.assign(assignment(server, make_bundle(1), 1, 1, key))
        wait_for(lambda: agent.scorer and agent.scorer.version == 1, what="v1 installed over MQTT")
        status = wait_for(lambda: next((s for s in reversed(watcher.status) if s.get("active_version") == 1), None), what="status v1")
        assert status["health"] == "ok" and "onnx" in status["capabilities"]["backends"] and status["transport"] == "mqtt"

        watcher.assign(assignment(server, make_bundle(2), 2, 2, key))
        wait_for(lambda: agent.scorer.version == 2, what="upgrade to v2")
        watcher.assign(assignment(server, make_bundle(1), 1, 3, key))  # a downgrade, not ordered
        wait_for(lambda: agent.last_install and "refused" in agent.last_install["result"] and agent.last_install["version"] == 1, what="refusal")
        assert agent.scorer.version == 2 and "versions only go forward" in agent.last_install["result"]

        _, other_pub = keys.generate_keypair(tmp_path / "rogue")
        rogue = keys.load_private_key(tmp_path / "rogue" / "private.pem")
        watcher.assign(assignment(server, make_bundle(9), 9, 4, rogue))  # unknown signer
        wait_for(lambda: "unknown key" in str(agent.last_install), what="rogue assignment refused")
        watcher.assign(assignment(server, make_bundle(1), 1, 5, key, rollback=True))  # a signed rollback order
        wait_for(lambda: agent.scorer.version == 1, what="ordered rollback")
        rec = agent.scorer.manifest["canary"]["rows"][0]["input"]
        assert agent.score(rec).version == 1
    finally:
        agent.stop()
        t.join(10)
        watcher.close()
    assert not t.is_alive()


def test_http_polling_fallback_with_etag(tmp_path: Path, server: ProtocolServer, keypair: dict[str, Any], make_bundle: Callable[..., Path]) -> None:
    server.assignments[DEVICE] = assignment(server, make_bundle(1), 1, 1, keypair["private"])
    agent = make_agent(tmp_path, server.url, keypair, mqtt_url=f"mqtt://127.0.0.1:{free_port()}")  # no broker there
    t = start(agent)
    try:
        wait_for(lambda: agent.scorer and agent.scorer.version == 1, what="install over HTTP polling")
        wait_for(lambda: any(e.get("status") == 304 for e in server.log), what="a 304 on re-poll")
        polls = [e for e in server.log if e["path"].endswith("/assignment")]
        assert polls[0]["if_none_match"] is None and any(e["if_none_match"] for e in polls[1:])
        wait_for(lambda: any(s.get("active_version") == 1 and s["transport"] == "http" for s in server.statuses), what="HTTP status")
    finally:
        agent.stop()
        t.join(10)


def test_cut_download_resumes_instead_of_restarting(tmp_path: Path, server: ProtocolServer, keypair: dict[str, Any], make_bundle: Callable[..., Path]) -> None:
    env = assignment(server, make_bundle(1), 1, 1, keypair["private"])
    sha, size = env["assignment"]["bundle_sha256"], env["assignment"]["size"]
    cut = size // 2 + 7
    server.cut_after[sha] = cut
    server.assignments[DEVICE] = env
    agent = make_agent(tmp_path, server.url, keypair)
    t = start(agent)
    try:
        wait_for(lambda: agent.scorer and agent.scorer.version == 1, what="install after a cut download")
    finally:
        agent.stop()
        t.join(10)
    gets = [e for e in server.log if e["path"].startswith("/api/v1/artifacts/")]
    assert gets[0]["cut_at"] == cut and gets[0]["range"] is None
    assert gets[1]["range"] == f"bytes={cut}-" and gets[1]["status"] == 206 and gets[1]["start"] == cut
    assert len(gets) == 2, "resumed once, never restarted from zero"


def test_offline_outbox_delivers_10000_records_exactly_once(tmp_path: Path, keypair: dict[str, Any], make_bundle: Callable[..., Path], fresh_data: Any) -> None:
    from runtimes.python.store import ModelStore

    broker = Mosquitto(tmp_path)  # not started: the device is offline
    dead_server = f"http://127.0.0.1:{free_port()}"
    ModelStore(tmp_path / "device" / "models", keypair["public"]).install(make_bundle(1))
    agent = make_agent(tmp_path, dead_server, keypair, broker.url, window_seconds=1e9)
    t = start(agent)
    watcher = None
    try:
        base = agent.scorer.manifest["canary"]["rows"]
        for i in range(10_000):
            rec = dict(base[i % len(base)]["input"])
            rec["tenure"] = i % 73
            agent.score(rec, entity_id=f"cust-{i}")
        assert agent.outbox.depth() == 10_000
        expected = {m.id for m in agent.outbox.peek(20_000)}
        time.sleep(1.0)  # the agent keeps failing to flush; nothing is dropped or lost
        assert agent.outbox.depth() == 10_000 and agent.outbox.stats().get("dropped_prediction", 0) == 0

        broker.start()
        watcher = Watcher(broker)
        wait_for(lambda: agent.outbox.depth() == 0, timeout=90, what="outbox drained after the broker came back")
        wait_for(lambda: expected <= set(watcher.telemetry_ids), timeout=30, what="all 10,000 ids at the subscriber")
        received = {k: v for k, v in watcher.telemetry_ids.items() if k in expected}
        assert set(received) == expected, "every record arrives"
        assert all(v == 1 for v in received.values()), f"{sum(v > 1 for v in received.values())} ids arrived twice"
    finally:
        agent.stop()
        t.join(10)
        if watcher:
            watcher.close()
        broker.stop()


def test_cli_agent_scores_offline_and_stops_cleanly_on_sigterm(tmp_path: Path, keypair: dict[str, Any], make_bundle: Callable[..., Path]) -> None:
    from runtimes.python.store import ModelStore

    data = tmp_path / "device"
    ModelStore(data / "models", keypair["public"]).install(make_bundle(1))
    cred = tmp_path / "cred.json"
    keys.generate_keypair(tmp_path / "server-key")  # the (unreachable) server's assignment key
    cred.write_text(json.dumps({"device_id": DEVICE, "token": "t", "publisher_keys": [keypair["public_path"].read_text()],
                                "assignment_keys": [(tmp_path / "server-key" / "public.pem").read_text()]}))
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "edgefleet_cli.main", "agent", "run", "--server", f"http://127.0.0.1:{free_port()}",
                             "--credential", str(cred), "--data-dir", str(data), "--input-dir", str(inbox), "--poll-seconds", "0.5"],
                            stderr=subprocess.PIPE, text=True)
    try:
        rec = json.loads((data / "models" / "slots").glob("*/manifest.json").__next__().read_text())["canary"]["rows"][0]["input"]
        lines = [json.dumps({**rec, "_entity_id": "c1"}), json.dumps({**rec, "tenure": "abc"})]
        (inbox / "batch.jsonl.tmp").write_text("\n".join(lines) + "\n")
        os.replace(inbox / "batch.jsonl.tmp", inbox / "batch.jsonl")
        out = wait_for(lambda: (inbox / "scored" / "batch.jsonl").exists() and (inbox / "scored" / "batch.jsonl").read_text(), what="scored output")
        rows = [json.loads(x) for x in out.splitlines()]
        assert rows[0]["model_version"] == 1 and rows[0]["entity_id"] == "c1" and 0 <= rows[0]["probability"] <= 1
        assert "tenure" in rows[1]["error"] and "'abc' is not a number" in rows[1]["error"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "Traceback" not in proc.stderr.read()
    from runtimes.python.outbox import Outbox

    assert Outbox(data / "outbox.sqlite").depth() >= 1, "telemetry for the offline prediction is kept"
