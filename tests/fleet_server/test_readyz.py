"""``/readyz`` on a real server with a real Mosquitto: ready, then 503 naming ``broker`` while
Mosquitto is down, then ready again once it is back; ``/healthz`` stays 200 throughout. And the
background parts log a repeating failure once (caplog on the real threads)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from fleet_server.core import Fleet, ServerConfig
from fleet_server.monitoring.service import Monitor
from fleet_server.serve import Reconciler
from tests.fleet_server.conftest import Api, wait_for
from tests.support.mqtt_broker import Mosquitto


def _ready(api: Api) -> tuple[int, dict[str, Any]]:
    code, body, _ = api("GET", "/readyz", token=None)
    return code, body


def test_readyz_follows_the_broker_down_and_back(tmp_path: Path, make_server: Any) -> None:
    broker = Mosquitto(tmp_path).start()
    try:
        server = make_server(mqtt_url=broker.url)
        api = Api(server)
        code, body = wait_for(lambda: (lambda r: r if r[0] == 200 else None)(_ready(api)), timeout=30, what="ready")
        assert body["ready"] is True and set(body["checks"]) == {"database", "broker", "ingest", "monitor", "reconciler"}, body
        assert all(c["ok"] for c in body["checks"].values()), body

        broker.stop()
        code, body = wait_for(lambda: (lambda r: r if r[0] == 503 else None)(_ready(api)), timeout=30, what="503 with the broker down")
        assert body["ready"] is False and body["failing"] == ["broker"], body
        assert body["checks"]["broker"]["ok"] is False and body["checks"]["database"]["ok"] is True, body
        assert str(broker.port) in body["checks"]["broker"]["detail"], body
        assert api("GET", "/healthz", token=None)[0] == 200, "liveness must not depend on the broker"

        broker.start()  # same port
        code, body = wait_for(lambda: (lambda r: r if r[0] == 200 else None)(_ready(api)), timeout=40, what="ready again")
        assert body["ready"] is True and "failing" not in body, body
    finally:
        broker.stop()


def test_readyz_without_a_broker_is_ready_and_names_a_dead_thread(make_server: Any) -> None:
    server = make_server()  # embedded_broker=False, no --mqtt: devices poll over HTTP
    api = Api(server)
    code, body = _ready(api)
    assert code == 200 and body["checks"]["broker"]["ok"] and "off" in body["checks"]["broker"]["detail"], body
    server.monitor.stop_event.set()
    server.monitor.join(10)
    code, body = _ready(api)
    assert code == 503 and body["failing"] == ["monitor"], body


def _failing_fleet(tmp_path: Path) -> Fleet:
    fleet = Fleet(ServerConfig(data_dir=tmp_path / "fleet", embedded_broker=False))
    with fleet.engine.begin() as conn:  # every pass now fails the same way
        conn.execute(text("DROP TABLE rollout_targets"))
        conn.execute(text("DROP TABLE rollouts"))  # the reconciler's first query
        conn.execute(text("DROP TABLE assignments"))
        conn.execute(text("DROP TABLE model_versions"))  # the monitor's first query
    return fleet


@pytest.mark.parametrize("part", ["reconciler", "monitor"])
def test_a_repeating_background_failure_is_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture, part: str) -> None:
    fleet = _failing_fleet(tmp_path)
    thread = Reconciler(fleet, 0.02) if part == "reconciler" else Monitor(fleet, 0.02)
    caplog.set_level(logging.INFO)
    thread.start()
    try:
        time.sleep(1.0)  # dozens of failing passes
    finally:
        thread.stop_event.set()
        if isinstance(thread, Reconciler):
            thread.wake.set()
        thread.join(10)
    assert thread.last_error and "no such table" in thread.last_error, thread.last_error
    lines = [r for r in caplog.records if r.levelno >= logging.ERROR and thread.part in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]
    assert "no such table" in lines[0].getMessage()
