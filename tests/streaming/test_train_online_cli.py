"""The ``edgefleet train-online`` verb itself, as a process, on a real Tansu stream and a real fleet server.

The learning, the gate and the rollout are proven in test_train_online.py through ``run_online``; here the
CLI's own wiring is checked: its arguments reach ``run_online``, the token comes from the environment, the
exit code and the one-line summary say what happened, and a version it publishes carries ``online``
provenance naming the topic and the offsets it read.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fleet_server.conftest import Api, enroll, make_server  # noqa: F401 - make_server is a fixture
from tests.spark.conftest import EDGEFLEET
from tests.streaming.test_train_online import _champion, _produce, labelled_events


def _cli(server: Any, tansu: Any, keypair: dict[str, Any], tmp_path: Path, *extra: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "EDGEFLEET_ADMIN_TOKEN"}
    if token is not None:
        env["EDGEFLEET_ADMIN_TOKEN"] = token
    cmd = [str(EDGEFLEET), "train-online", "--bootstrap", tansu.bootstrap, "--topic", "labelled", "--server", server.url,
           "--model", "churn", "--key", str(keypair["private_path"]), "--token-file", str(tmp_path / "no-such-token"), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)


def _server_with_champion(make_server: Any, keypair: dict[str, Any], tmp_path: Path) -> tuple[Any, Api]:
    server = make_server()
    api = Api(server)
    code, body, _ = api("POST", "/api/v1/models", raw=_champion(tmp_path, keypair).read_bytes())
    assert code == 201, body
    return server, api


@pytest.mark.slow  # 24 s at load 8 (the champion's compile, the CLI's imports): over the default run's 5 s per test
def test_train_online_cli_short_stream_publishes_nothing_and_says_so(tansu: Any, make_server: Any, keypair: dict[str, Any],
                                                                    tmp_path: Path) -> None:
    server, api = _server_with_champion(make_server, keypair, tmp_path)
    _produce(tansu.bootstrap, "labelled", labelled_events(400, seed=21, drift_at=0))
    t = time.monotonic()
    r = _cli(server, tansu, keypair, tmp_path, "--reference-events", "100", "--batch", "50", "--until-idle", "1",
             token=server.fleet.secrets.admin_token)
    took = time.monotonic() - t
    # 400 events never fill the 1,000-event held-out window: no comparison, nothing published, exit 4
    assert r.returncode == 4, r.stderr[-2000:]
    assert "train-online: stream_ended" in r.stderr and "400 events" in r.stderr, r.stderr[-2000:]
    assert "champion churn v1" in r.stderr  # it found the serving champion through the server
    assert api("GET", "/api/v1/models/churn")[1]["version"] == 1
    assert took < 60, took


def test_train_online_cli_without_a_token_names_the_option(tansu: Any, make_server: Any, keypair: dict[str, Any], tmp_path: Path) -> None:
    server, _ = _server_with_champion(make_server, keypair, tmp_path)
    r = _cli(server, tansu, keypair, tmp_path)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "--token-file" in r.stderr and "no admin token" in r.stderr, r.stderr[-2000:]


@pytest.mark.slow  # 7,000 events, two compiles and an upload: ~30 s
def test_train_online_cli_publishes_a_version_with_online_provenance(tansu: Any, make_server: Any, keypair: dict[str, Any],
                                                                    tmp_path: Path) -> None:
    server, api = _server_with_champion(make_server, keypair, tmp_path)
    enroll(api, "dev-0")  # a rollout needs a device to reach
    stream = labelled_events(7000, seed=22, drift_at=0)  # the whole stream is past the flip the champion never saw
    _produce(tansu.bootstrap, "labelled", stream)
    r = _cli(server, tansu, keypair, tmp_path, "--reference-events", "500", "--check-every", "500", "--until-idle", "2",
             token=server.fleet.secrets.admin_token)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "train-online: published v2 (rollout " in r.stderr, r.stderr[-2000:]
    code, v2, _ = api("GET", "/api/v1/models/churn/versions/2")
    assert code == 200, v2
    online = v2["provenance"]["trigger"]["online"]
    assert online["topic"] == "labelled" and online["bootstrap"] == tansu.bootstrap
    assert online["offsets"]["0"]["first"] == 0 and 5000 <= online["offsets"]["0"]["last"] <= len(stream)
    assert v2["provenance"]["metrics"]["won_on"]
    assert any(ro["version"] == 2 for ro in api("GET", "/api/v1/rollouts")[1]["rollouts"])  # the gated rollout was started
