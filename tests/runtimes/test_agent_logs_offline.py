"""An offline agent says so once per cause and then backs off: it does not write a WARNING every
tick. Real agent loop, real sockets: loopback ports nothing listens on, for HTTP and for MQTT."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from runtimes.python.agent import Agent, AgentConfig
from tests.support.mqtt_broker import free_port


def test_an_offline_agent_logs_each_failure_with_backoff_not_every_tick(tmp_path: Path, keypair: dict[str, Any],
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="runtimes.python")
    http, mqtt = free_port(), free_port()
    cfg = AgentConfig(server=f"http://127.0.0.1:{http}", device_id="offline-1", token="t", data_dir=tmp_path / "device",
                      trusted_keys=[keypair["public"]], mqtt=f"mqtt://127.0.0.1:{mqtt}", tick_seconds=0.05,
                      backoff_base=0.5, backoff_cap=4.0, mqtt_reconnect_max=1, final_flush_seconds=1.0)
    agent = Agent(cfg)
    t = threading.Thread(target=agent.run, kwargs={"install_signal_handlers": False}, daemon=True)
    t.start()
    time.sleep(4.0)  # 80 ticks
    agent.stop()
    t.join(10)
    assert not t.is_alive()
    msgs = [(r.levelno, r.getMessage()) for r in caplog.records if r.name.startswith("runtimes.python")]
    status = [m for lv, m in msgs if lv == logging.WARNING and m.startswith("status report failed: ")]
    assert 1 <= len(status) <= 6, f"{len(status)} status warnings in 80 ticks"  # backoff 0.5 s doubling, full jitter
    assert status[0].startswith(f"status report failed: cannot reach the fleet server at http://127.0.0.1:{http}")
    assert "(attempt 1, retry in " in status[0]
    broker = [m for lv, m in msgs if lv == logging.WARNING and m.startswith(f"MQTT broker 127.0.0.1:{mqtt} unreachable")]
    assert len(broker) == 1, broker  # repeats go to DEBUG
    start = next(m for lv, m in msgs if m.startswith("agent offline-1 starting: "))
    assert "no model yet, waiting for the first assignment" in start and f"mqtt mqtt://127.0.0.1:{mqtt}" in start
    assert "final flush on SIGTERM up to 1s" in start
