"""Fleet-server fixtures: real servers (waitress + SQLite or PostgreSQL), real brokers, real agents."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest

from fleet_server.core import ServerConfig
from fleet_server.serve import FleetServer
from runtimes.python.agent import Agent, AgentConfig
from tests.runtimes.conftest import lr_result, make_bundle  # noqa: F401 - shared fixtures
from tests.support.postgres import postgres_url  # noqa: F401 - session-scoped real PostgreSQL


class Api:
    def __init__(self, server: FleetServer, token: str | None = None) -> None:
        self.server = server
        self.token = token if token is not None else server.fleet.secrets.admin_token

    def __call__(self, method: str, path: str, body: Any = None, raw: bytes | None = None, token: str | None = "default",
                 headers: dict[str, str] | None = None) -> tuple[int, Any, dict[str, str]]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.server.url + path, data=data, method=method)
        tok = self.token if token == "default" else token
        if tok:
            req.add_header("Authorization", f"Bearer {tok}")
        req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                text = r.read()
                ctype = r.headers.get("Content-Type", "")
                return r.status, (json.loads(text) if text and "json" in ctype else text), {k.lower(): v for k, v in r.headers.items()}
        except urllib.error.HTTPError as e:
            text = e.read()
            try:
                return e.code, json.loads(text), {k.lower(): v for k, v in e.headers.items()}
            except ValueError:
                return e.code, text, {k.lower(): v for k, v in e.headers.items()}


@pytest.fixture()
def make_server(tmp_path: Path, keypair: dict[str, Any]) -> Any:
    servers: list[FleetServer] = []

    def make(data_dir: Path | None = None, **kw: Any) -> FleetServer:
        kw.setdefault("embedded_broker", False)
        kw.setdefault("port", 0)
        kw.setdefault("reconcile_seconds", 0.2)
        cfg = ServerConfig(data_dir=data_dir or tmp_path / "fleet", trust_keys=[keypair["public_path"]], **kw)
        s = FleetServer(cfg).start()
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()


def enroll(api: Api, device_id: str, group: str = "default", tags: list[str] | None = None) -> dict[str, Any]:
    code, tok, _ = api("POST", "/api/v1/enrollment-tokens", {"group": group, "tags": tags or []})
    assert code == 201, tok
    code, cred, _ = api("POST", "/api/v1/devices/enroll", {"token": tok["token"], "device_id": device_id}, token=None)
    assert code == 201, cred
    return cred


def start_agent(tmp_path: Path, cred: dict[str, Any], **kw: Any) -> tuple[Agent, threading.Thread]:
    path = tmp_path / f"cred-{cred['device_id']}.json"
    path.write_text(json.dumps(cred))
    defaults = dict(poll_seconds=0.5, status_seconds=2.0, tick_seconds=0.05, backoff_base=0.05, backoff_cap=1.0, mqtt_reconnect_max=2)
    defaults.update(kw)
    cfg = AgentConfig.from_credential(path, data_dir=tmp_path / "devices" / cred["device_id"], **defaults)
    agent = Agent(cfg)
    t = threading.Thread(target=agent.run, kwargs={"install_signal_handlers": False}, daemon=True)
    t.start()
    return agent, t


def wait_for(cond: Callable[[], Any], timeout: float = 60.0, what: str = "condition", every: float = 0.1) -> Any:
    import time

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@pytest.fixture()
def fresh_pg(postgres_url: str) -> str:  # noqa: F811 - the imported session fixture
    """The session's real PostgreSQL database, emptied for this test."""
    from sqlalchemy import create_engine, text

    engine = create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    return postgres_url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str | None:
    """Run a test on both stores: SQLite (None = the default file) and a real PostgreSQL."""
    return None if request.param == "sqlite" else request.getfixturevalue("fresh_pg")
