"""The agent logs what it does through stdlib logging (never configuring a handler): each
assignment, download, verify, install, canary result, rollback and inbox file at INFO; flush
and background failures at WARNING/ERROR with their cause. Real agent, real HTTP server."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runtimes.python import agent as agent_module
from runtimes.python import flushing, inbox, store, transport
from tests.runtimes.test_agent import DEVICE, assignment, make_agent, start, wait_for
from tests.support.mqtt_broker import free_port
from tests.support.protocol_server import ProtocolServer


@pytest.fixture()
def server() -> Iterator[ProtocolServer]:
    s = ProtocolServer().start()
    yield s
    s.stop()


def _messages(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("runtimes.python") and r.levelno >= level]


def test_install_rollback_and_inbox_are_logged(tmp_path: Path, server: ProtocolServer, keypair: dict[str, Any],
                                               make_bundle: Callable[..., Path], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="runtimes.python")
    drop = tmp_path / "inbox"
    drop.mkdir()
    agent = make_agent(tmp_path, server.url, keypair, input_dir=drop)
    t = start(agent)
    try:
        server.assignments[DEVICE] = assignment(server, make_bundle(1), 1, 1, keypair["private"])
        wait_for(lambda: agent.scorer and agent.scorer.version == 1, what="v1")
        server.assignments[DEVICE] = assignment(server, make_bundle(2), 2, 2, keypair["private"])
        wait_for(lambda: agent.scorer.version == 2, what="v2")
        server.assignments[DEVICE] = assignment(server, make_bundle(1), 1, 3, keypair["private"], rollback=True)
        wait_for(lambda: agent.scorer.version == 1, what="ordered rollback to v1")
        rec = agent.scorer.manifest["canary"]["rows"][0]["input"]
        (drop / "good.jsonl").write_text(json.dumps(rec) + "\n" + json.dumps({**rec, "tenure": "abc"}) + "\n")
        (drop / "bad.jsonl").write_bytes(b"\xff\xfe not utf-8\n")
        wait_for(lambda: (drop / "done" / "good.jsonl").exists() and (drop / "rejected" / "bad.jsonl.reason").exists(), what="inbox")
    finally:
        agent.stop()
        t.join(10)
    info = _messages(caplog)
    for want in ("assignment received: serial 1, version 1, bundle ", "downloading http://", "downloaded http://",
                 "verified bundle ", "canary check of churn v1 passed: ", "installed churn v1 in slot churn-v1-",
                 "assignment serial 1: installed v1", "assignment serial 2: installed v2",
                 "assignment received: serial 3, version 1 (ordered rollback)", "assignment serial 3: installed v1 (ordered rollback)",
                 "inbox file good.jsonl scored: 1 record(s), 1 bad record(s)", "inbox file bad.jsonl rejected: bad.jsonl is not UTF-8"):
        assert any(m.startswith(want) for m in info), f"no log line starting {want!r} in {info}"
    rolled = next(m for m in info if m.startswith("installed churn v1") and "ordered rollback" in m)
    assert "(previous v2)" in rolled
    warnings = [r for r in caplog.records if r.name.startswith("runtimes.python") and r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in warnings if "inbox" in r.getMessage()] == ["inbox file bad.jsonl rejected: " + (drop / "rejected" / "bad.jsonl.reason").read_text().strip()]


def test_a_refused_bundle_is_logged_as_an_error(tmp_path: Path, server: ProtocolServer, keypair: dict[str, Any],
                                                make_bundle: Callable[..., Path], caplog: pytest.LogCaptureFixture) -> None:
    def poison(m: dict[str, Any]) -> None:
        for row in m["canary"]["rows"]:
            row["probabilities"] = [0.5, 0.5]

    caplog.set_level(logging.INFO, logger="runtimes.python")
    agent = make_agent(tmp_path, server.url, keypair)
    t = start(agent)
    try:
        server.assignments[DEVICE] = assignment(server, make_bundle(1, edit=poison), 1, 1, keypair["private"])
        wait_for(lambda: (agent.last_install or {}).get("result", "").startswith("refused"), what="refusal")
    finally:
        agent.stop()
        t.join(10)
    errors = _messages(caplog, logging.ERROR)
    assert any(m.startswith("assignment serial 1: v1 refused by the model store: churn v1 failed its health check: canary 0") for m in errors), errors
    assert any(m.startswith("canary check of churn v1 failed: ") for m in _messages(caplog, logging.WARNING))


def test_flush_failures_are_warnings_with_their_cause(tmp_path: Path, keypair: dict[str, Any], make_bundle: Callable[..., Path],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="runtimes.python")
    port = free_port()  # nothing listens there
    agent = make_agent(tmp_path, f"http://127.0.0.1:{port}", keypair)
    agent.scorer = agent.store.install(make_bundle(1)).scorer
    agent.score(agent.scorer.manifest["canary"]["rows"][0]["input"])  # type: ignore[union-attr]
    agent.tick()
    try:
        flush = [r for r in caplog.records if r.name == "runtimes.python.agent" and r.getMessage().startswith("telemetry flush failed")]
        assert flush and flush[0].levelno == logging.WARNING
        assert f"cannot reach the fleet server at http://127.0.0.1:{port}" in flush[0].getMessage()
        assert "1 message(s) waiting" in flush[0].getMessage()
        assert any(r.levelno == logging.WARNING and r.getMessage().startswith("status report failed: ") for r in caplog.records)
        assert agent.outbox.depth() == 1, "a failed flush keeps the message"
    finally:
        agent.outbox.close()


def test_the_runtime_configures_no_handlers() -> None:
    for module in (agent_module, flushing, inbox, store, transport):
        logger = logging.getLogger(module.__name__)
        assert logger is module.log and logger.handlers == [] and logger.propagate
