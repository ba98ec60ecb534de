"""The ML canary gate with real agents on a real Mosquitto: a challenger trained on shuffled
labels passes parity and installs cleanly, but scores the canary's customers unlike the
champion, so the rollout waits for canary telemetry, halts, and rolls the canary back. The
control, a challenger retrained on the true labels, waits, passes and reaches every device."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from edgefleet_cli.samples.telco_churn import CATEGORICAL, LABEL, NUMERIC, make_telco_churn
from tests.fleet_server.conftest import Api, enroll, start_agent, wait_for
from tests.support.mqtt_broker import Mosquitto


@pytest.fixture()
def broker(tmp_path: Path) -> Any:
    b = Mosquitto(tmp_path).start()
    yield b
    b.stop()


class Feeder(threading.Thread):
    """Drops 100 customer records into each agent's inbox whenever its last file was scored."""

    def __init__(self, inboxes: list[Path]) -> None:
        super().__init__(daemon=True)
        self.inboxes, self.stop = inboxes, threading.Event()
        self.batch = 0

    def run(self) -> None:
        while not self.stop.wait(0.2):
            for inbox in self.inboxes:
                if not list(inbox.glob("*.jsonl")):
                    frame = make_telco_churn(100, seed=700 + self.batch)[CATEGORICAL + NUMERIC]
                    recs = [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()} for r in frame.to_dict("records")]
                    tmp = inbox / f".b{self.batch}.tmp"
                    tmp.write_text("".join(json.dumps(r) + "\n" for r in recs))
                    tmp.rename(inbox / f"b{self.batch:05d}.jsonl")
                    self.batch += 1


@pytest.mark.parametrize("labels", ["shuffled", "true"])
def test_ml_gate_halts_a_shuffled_label_challenger_and_passes_a_retrained_one(tmp_path: Path, broker: Mosquitto, make_server: Any,
                                                                              make_bundle: Callable[..., Path], churn_data: dict[str, Any],
                                                                              keypair: dict[str, Any], labels: str) -> None:
    """``true``, the control: a challenger retrained on 85% of the same data passes the gate."""
    from train_churn import make_pipeline

    from compiler import compile

    train = churn_data["train"]
    if labels == "shuffled":
        X, y = train[CATEGORICAL + NUMERIC], train[LABEL].sample(frac=1.0, random_state=0).to_numpy()
    else:
        part = train.sample(frac=0.85, random_state=1)
        X, y = part[CATEGORICAL + NUMERIC], part[LABEL]
    challenger = compile(make_pipeline("lr").fit(X, y), churn_data["holdout"], targets=["onnx"],
                         name="churn", version=2, private_key=keypair["private"], label=LABEL, out_dir=tmp_path / "v2")
    assert challenger.parity_passed and challenger.archive is not None, "the bad challenger passes parity"

    server = make_server(mqtt_url=broker.url)
    api = Api(server)
    assert api("POST", "/api/v1/models", raw=make_bundle(1).read_bytes())[0] == 201
    inboxes = [tmp_path / f"inbox-{i}" for i in range(4)]
    agents = []
    for i, inbox in enumerate(inboxes):
        inbox.mkdir()
        agents.append(start_agent(tmp_path, enroll(api, f"g{i}"), input_dir=inbox, window_seconds=1.0, tick_seconds=0.1))
    feeder = Feeder(inboxes)
    try:
        wait_for(lambda: all(d["capabilities"] for d in api("GET", "/api/v1/devices")[1]["devices"]), what="capabilities")
        code, r1, _ = api("POST", "/api/v1/rollouts", {"model": "churn", "version": 1, "steps": [100]})
        assert code == 201
        wait_for(lambda: api("GET", f"/api/v1/rollouts/{r1['id']}")[1]["state"] == "completed", what="v1 everywhere")
        feeder.start()
        wait_for(lambda: api("GET", "/api/v1/counters")[1].get("telemetry_accepted", 0) >= 400, what="champion telemetry")

        assert api("POST", "/api/v1/models", raw=challenger.archive.read_bytes())[0] == 201
        code, r2, _ = api("POST", "/api/v1/rollouts", {"model": "churn", "version": 2, "steps": [25, 100],
                                                      "gates": {"ml": {"min_count": 200, "max_auroc_drop": 0.05}}})
        assert code == 201
        done = wait_for(lambda: (lambda r: r if r["state"] in ("halted", "completed") else None)(api("GET", f"/api/v1/rollouts/{r2['id']}")[1]),
                        what="the v2 rollout to finish", timeout=60, every=0.25)
        if labels == "true":
            assert done["state"] == "completed", done["reason"]
            assert "waiting" in [e["event"] for e in done["history"]] and done["counts"] == {"installed": 4}
            return
        assert done["state"] == "halted" and done["step_index"] == 0, done
        assert done["reason"].startswith("ml gate: canary v2 on 1 device(s)")
        assert "score distribution differs from v1's" in done["reason"] and "estimated AUROC" in done["reason"]
        events = [e["event"] for e in done["history"]]
        assert "waiting" in events and events.index("waiting") < events.index("halted"), "the gate waited for canary rows first"
        assert done["counts"] == {"rolled_back": 1, "pending": 3}
        wait_for(lambda: all(a.scorer is not None and a.scorer.version == 1 for a, _ in agents), what="the canary back on v1")
    finally:
        feeder.stop.set()
        for a, _ in agents:
            a.stop()
        for _, t in agents:
            t.join(10)
