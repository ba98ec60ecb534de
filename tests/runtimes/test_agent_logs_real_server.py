"""The agent tells the operator what it does: one log line per decision, at INFO with its reason,
failures at WARNING/ERROR. Real ``edgefleet agent run`` (``--log-format json``) against a real
fleet server (waitress + SQLite) and a real Mosquitto: install, update, an ordered rollback, a
refused bundle (its canary rows do not reproduce), inbox files scored and rejected; an artifact
download the server answers with HTTP 500, then resumed from the bytes already on disk.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.fleet_server.conftest import Api, enroll, make_server, start_agent, wait_for  # noqa: F401 - fixture
from tests.support.mqtt_broker import Mosquitto, free_port


@pytest.fixture()
def broker(tmp_path: Path) -> Any:
    b = Mosquitto(tmp_path).start()
    yield b
    b.stop()


def _poison(m: dict[str, Any]) -> None:
    """Validly signed, but its canary rows cannot be reproduced."""
    for row in m["canary"]["rows"]:
        row["probabilities"] = [0.5, 0.5]


def _rollout(api: Api, body: dict[str, Any]) -> int:
    code, r, _ = api("POST", "/api/v1/rollouts", body)
    assert code == 201, r
    return int(r["id"])


def _device(api: Api, device_id: str) -> dict[str, Any]:
    body: dict[str, Any] = api("GET", f"/api/v1/devices/{device_id}")[1]
    return body


def _find(logs: list[dict[str, Any]], start: str, level: str = "INFO", logger: str | None = None) -> dict[str, Any]:
    for e in logs:
        if e["message"].startswith(start) and e["level"] == level and (logger is None or e["logger"] == logger):
            return e
    raise AssertionError(f"no {level} log line starting {start!r}; got:\n" + "\n".join(f"{e['level']} {e['message']}" for e in logs))


def test_install_update_rollback_refusal_and_inbox_are_logged_as_json(tmp_path: Path, broker: Mosquitto, make_server: Any,
                                                                        make_bundle: Callable[..., Path]) -> None:
    server = make_server(mqtt_url=broker.url)
    api = Api(server)
    for bundle in (make_bundle(1), make_bundle(2), make_bundle(3, edit=_poison)):
        assert api("POST", "/api/v1/models", raw=bundle.read_bytes())[0] == 201
    cred = enroll(api, "logs-1")
    cred_path = tmp_path / "cred.json"
    cred_path.write_text(json.dumps(cred))
    data, inbox, log = tmp_path / "device", tmp_path / "inbox", tmp_path / "agent.log"
    inbox.mkdir()
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "edgefleet_cli.main", "--log-format", "json", "agent", "run",
                                 "--credential", str(cred_path), "--data-dir", str(data), "--input-dir", str(inbox)],
                                stdin=subprocess.DEVNULL, stderr=fh)
    try:
        wait_for(lambda: _device(api, "logs-1").get("capabilities"), what="the agent's first status")
        r1 = _rollout(api, {"model": "churn", "version": 1, "steps": [100]})
        wait_for(lambda: _device(api, "logs-1").get("active_version") == 1, what="v1 installed")
        # the device reports v1 before the server's reconciler closes the rollout; a second rollout of the
        # same model is refused until then (a 400 naming the running rollout), so wait for it to complete
        wait_for(lambda: api("GET", f"/api/v1/rollouts/{r1}")[1].get("state") == "completed", what="rollout 1 completed")
        r2 = _rollout(api, {"model": "churn", "version": 2, "steps": [100]})
        wait_for(lambda: _device(api, "logs-1").get("active_version") == 2, what="v2 installed")
        assert api("POST", f"/api/v1/rollouts/{r2}/rollback")[0] == 200
        wait_for(lambda: _device(api, "logs-1").get("active_version") == 1 and _device(api, "logs-1")["assignment"]["rollback"],
                 what="rolled back to v1")
        r3 = _rollout(api, {"model": "churn", "version": 3, "steps": [100], "gates": {"max_failure_ratio": 0.0}})
        wait_for(lambda: "refused" in ((_device(api, "logs-1").get("last_install") or {}).get("result") or ""), what="v3 refused")

        rec = json.loads(next((data / "models" / "slots").glob("churn-v1-*/manifest.json")).read_text())["canary"]["rows"][0]["input"]
        (inbox / "good.jsonl.tmp").write_text(json.dumps(rec) + "\n" + json.dumps({**rec, "tenure": "abc"}) + "\n")
        os.replace(inbox / "good.jsonl.tmp", inbox / "good.jsonl")
        (inbox / "bad.jsonl.tmp").write_bytes(b"\xff\xfe not utf-8\n")
        os.replace(inbox / "bad.jsonl.tmp", inbox / "bad.jsonl")
        wait_for(lambda: (inbox / "done" / "good.jsonl").exists() and (inbox / "rejected" / "bad.jsonl.reason").exists(), what="inbox")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "Traceback" not in text
    logs = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert {e["logger"] for e in logs} <= {"runtimes.python.agent", "runtimes.python.transport", "runtimes.python.store",
                                           "runtimes.python.inbox", "runtimes.python.flushing", "edgefleet_cli.main"}, "module loggers"
    assert all(set(e) >= {"ts", "level", "logger", "message"} for e in logs)

    start = _find(logs, "agent logs-1 starting: ", logger="runtimes.python.agent")["message"]
    for part in (f"server {cred['server']}", f"mqtt {cred['mqtt']}", f"data dir {data.resolve()}", "no model yet", "outbox 0 message(s)",
                 f"inbox {inbox}"):
        assert part in start, (part, start)

    _find(logs, "assignment received: serial 1, version 1, bundle ", logger="runtimes.python.agent")
    got = _find(logs, "assignment received: serial 1, ")["message"]
    assert f"; model churn, rollout {r1}, " in got, got
    _find(logs, "downloading http://127.0.0.1:", logger="runtimes.python.transport")
    _find(logs, "downloaded http://127.0.0.1:", logger="runtimes.python.transport")
    _find(logs, "verified bundle ", logger="runtimes.python.store")
    _find(logs, "canary check of churn v1 passed: ", logger="runtimes.python.store")
    assert "(the first model on this device)" in _find(logs, "installed churn v1 in slot ", logger="runtimes.python.store")["message"]
    _find(logs, "assignment serial 1: installed v1 in ", logger="runtimes.python.agent")
    assert f"model churn, rollout {r2}, " in _find(logs, "assignment received: serial 2, version 2, ")["message"]
    _find(logs, "assignment serial 2: installed v2 in ")
    got = _find(logs, "assignment received: serial 3, version 1 (ordered rollback), ")["message"]
    assert f"rollout {r2}" in got, got
    assert _find(logs, "rolled back churn v2 -> v1: ")["message"] == \
        f"rolled back churn v2 -> v1: ordered by the fleet server's signed rollback assignment (serial 3, rollout {r2})"
    assert f"rollout {r3}" in _find(logs, "assignment received: serial 4, version 3, ")["message"]
    failed = _find(logs, "canary check of churn v3 failed: ", level="WARNING", logger="runtimes.python.store")["message"]
    assert "row(s)" in failed and "canary 0" in failed, failed
    refused = _find(logs, "assignment serial 4: v3 refused by the model store: ", level="ERROR")["message"]
    assert "failed its health check" in refused and "kept v1 active" in refused, refused
    assert _find(logs, "rollback to churn v1 ordered by ")["message"] == (  # the server's answer to the refusal
        f"rollback to churn v1 ordered by the fleet server's signed rollback assignment (serial 5, rollout {r3}): "
        "v1 was already active, nothing changed")
    assert not [e for e in logs if e["message"].startswith("rolled back churn v1 -> v1")]
    _find(logs, "inbox file good.jsonl scored: 1 record(s), 1 bad record(s)", logger="runtimes.python.inbox")
    _find(logs, "inbox file bad.jsonl rejected: bad.jsonl is not UTF-8", level="WARNING", logger="runtimes.python.inbox")
    _find(logs, "final flush: sent ", logger="runtimes.python.flushing")
    _find(logs, "agent logs-1 stopped")


def test_an_artifact_download_answered_with_500_is_a_warning_naming_path_and_status(
        tmp_path: Path, broker: Mosquitto, make_server: Any, make_bundle: Callable[..., Path], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="runtimes.python")
    server = make_server(mqtt_url=broker.url)
    api = Api(server)
    assert api("POST", "/api/v1/models", raw=make_bundle(1).read_bytes())[0] == 201
    (stored,) = server.fleet.artifacts_dir.glob("*.tar")
    sha = stored.stem
    kept = tmp_path / "kept.tar"
    shutil.move(str(stored), kept)
    stored.mkdir()  # the server still lists the artifact, but cannot send it: its handler fails with HTTP 500
    agent, t = start_agent(tmp_path, enroll(api, "logs-2"))
    try:
        wait_for(lambda: _device(api, "logs-2").get("capabilities"), what="the agent's first status")
        _rollout(api, {"model": "churn", "version": 1, "steps": [100]})
        wait_for(lambda: any(r.getMessage().startswith("download of churn v1 failed") for r in caplog.records), what="a failed download")
        fail = next(r for r in caplog.records if r.getMessage().startswith("download of churn v1 failed"))
        assert fail.levelno == logging.WARNING and fail.name == "runtimes.python.agent"
        msg = fail.getMessage()
        assert f"/api/v1/artifacts/{sha}: HTTP 500 (server error: " in msg and "retry in " in msg, msg
        assert agent.scorer is None

        part = agent.downloads / f"{sha}.tar.part"  # as if an earlier transfer was cut after 5,000 bytes
        part.write_bytes(kept.read_bytes()[:5000])
        stored.rmdir()
        shutil.move(str(kept), stored)
        wait_for(lambda: agent.scorer is not None and agent.scorer.version == 1, what="v1 installed once the server can send it")
    finally:
        agent.stop()
        t.join(10)
    msgs = [r.getMessage() for r in caplog.records if r.name.startswith("runtimes.python")]
    size = stored.stat().st_size
    assert any(m.endswith(f"/api/v1/artifacts/{sha}: resuming at byte 5000 of {size} (5000 bytes already on disk)") for m in msgs), msgs
    assert any(m.startswith("downloaded http://") and sha in m for m in msgs)


def test_an_unreachable_artifact_server_is_a_warning_naming_the_url(tmp_path: Path, broker: Mosquitto, make_server: Any,
                                                                    make_bundle: Callable[..., Path],
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """The assignment arrives over MQTT, but the HTTP side the agent was given does not answer."""
    caplog.set_level(logging.INFO, logger="runtimes.python")
    server = make_server(mqtt_url=broker.url)
    api = Api(server)
    assert api("POST", "/api/v1/models", raw=make_bundle(1).read_bytes())[0] == 201
    dead = f"http://127.0.0.1:{free_port()}"
    agent, t = start_agent(tmp_path, enroll(api, "logs-3"), server=dead)
    try:
        wait_for(lambda: _device(api, "logs-3").get("capabilities"), what="the agent's first status (over MQTT)")
        _rollout(api, {"model": "churn", "version": 1, "steps": [100]})
        wait_for(lambda: any(r.getMessage().startswith("download of churn v1 failed") for r in caplog.records), what="a failed download")
    finally:
        agent.stop()
        t.join(10)
    fail = next(r for r in caplog.records if r.getMessage().startswith("download of churn v1 failed"))
    assert fail.levelno == logging.WARNING
    assert f"GET {dead}/api/v1/artifacts/" in fail.getMessage() and "cannot reach the fleet server (" in fail.getMessage(), fail.getMessage()
    assert agent.scorer is None
