"""``edgefleet retrain`` as a real subprocess against a real fleet server.

Labeled telemetry goes through the server's real ingest (``DeviceSim``: predictions scored by
the real ONNX runtime, delayed outcomes). The CLI downloads and verifies the champion, trains,
compares champion and challenger on the newest labeled slice, compiles, uploads with provenance
and leaves the rollout to an approval; or stops with exit 4 when the challenger does not win.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import pytest

from edgefleet_cli.samples.telco_churn import LABEL, make_telco_churn
from fleet_server.errors import FleetError
from fleet_server.monitoring import retrain_trigger as retrain_policy
from runtimes.python import Scorer
from tests.fleet_server.conftest import Api
from tests.fleet_server.monitoring.conftest import DeviceSim, add_device

ROOT = Path(__file__).resolve().parents[3]


def drifted(n: int, seed: int) -> pd.DataFrame:
    """The simulation's price increase: two-year-contract customers pay 30% more and churn more."""
    base = make_telco_churn(n, seed=seed)
    shifted = make_telco_churn(n, seed=seed + 1, price_shift=0.3)
    two = "Two year"
    return pd.concat([base[base["Contract"] != two], shifted[shifted["Contract"] == two]]).sample(frac=1.0, random_state=seed).reset_index(drop=True)


@pytest.fixture()
def served(make_server: Any, make_bundle: Callable[..., Path], lr_result: Any, churn_data: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    server = make_server()
    api = Api(server)
    assert api("POST", "/api/v1/models", raw=make_bundle(1).read_bytes())[0] == 201
    add_device(server.fleet, "d0", "default")
    sim = DeviceSim(server.fleet, Scorer(lr_result.manifest, lr_result.files), "d0")
    ref = tmp_path / "train.csv"
    churn_data["train"].to_csv(ref, index=False)
    return {"server": server, "api": api, "sim": sim, "reference": ref}


def feed(sim: DeviceSim, frame: pd.DataFrame, prefix: str) -> None:
    now = time.time()
    sim.run_window(frame, now - 900, now - 300, prefix)
    for row in sim.scored:
        if row["entity_id"].startswith(prefix):
            sim.outcome(row["entity_id"], row["label"], row["created"] + 30)


def retrain(served: dict[str, Any], keypair: dict[str, Any], *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EDGEFLEET_ADMIN_TOKEN": served["server"].fleet.secrets.admin_token}
    argv = [sys.executable, "-m", "edgefleet_cli.main", "retrain", "--server", served["server"].url, "--model", "churn",
            "--trainer", f"{ROOT / 'examples' / 'churn_trainers.py'}:train_lr", "--reference-data", str(served["reference"]),
            "--key", str(keypair["private_path"]), "--window-seconds", "3600", "--quiet", *extra]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=180)


def test_labeled_export_joins_outcomes_and_rejects_bad_provenance(served: dict[str, Any], make_bundle: Callable[..., Path]) -> None:
    api = served["api"]
    frame = drifted(300, seed=5)
    feed(served["sim"], frame, "a")
    code, body, _ = api("GET", f"/api/v1/models/churn/labeled?start={time.time() - 3600}")
    assert code == 200 and body["count"] == len(frame) and body["label_column"] == LABEL and body["versions"] == [1]
    row = body["rows"][0]
    assert {"Contract", "MonthlyCharges", "label", "score", "model_version", "device_id", "ts", "entity_id"} <= set(row)
    assert row["label"] in (0, 1) and row["device_id"] == "d0" and row["model_version"] == 1
    assert [r["ts"] for r in body["rows"]] == sorted(r["ts"] for r in body["rows"])
    code, body, _ = api("GET", f"/api/v1/models/churn/labeled?start={time.time() - 3600}&limit=10")
    assert body["count"] == 10 and body["truncated"] is True
    code, body, _ = api("POST", "/api/v1/models", raw=make_bundle(2).read_bytes(), headers={"X-Edgefleet-Provenance": "{not json"})
    assert code == 400 and body["error"].startswith("X-Edgefleet-Provenance: not JSON")
    code, body, _ = api("POST", "/api/v1/models/churn/versions/1/approve")
    assert code == 409 and "not waiting for approval" in body["error"]


def test_challenger_that_wins_is_registered_with_provenance_and_waits_for_approval(served: dict[str, Any], keypair: dict[str, Any]) -> None:
    api = served["api"]
    feed(served["sim"], make_telco_churn(1000, seed=11), "base")
    feed(served["sim"], drifted(3000, seed=12), "drift")
    proc = retrain(served, keypair, "--approve-required", "--margin", "0.01")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["decision"] == "awaiting_approval" and out["version"] == 2, out
    assert "[retrain] champion churn v1" in proc.stderr and "challenger wins on" in proc.stderr
    code, v2, _ = api("GET", "/api/v1/models/churn/versions/2")
    prov = v2["provenance"]
    assert prov["parent"]["version"] == 1 and prov["trainer"].endswith("churn_trainers.py:train_lr")
    assert prov["approval"] == {"state": "pending"} and prov["rollouts"] == []
    assert prov["rows"]["telemetry_train"] + prov["rows"]["holdout"] == prov["data_window"]["labeled_rows"] > 3000 and prov["rows"]["reference"] == 2800
    m = prov["metrics"]
    assert m["challenger"]["auroc"] >= m["champion"]["auroc"] + 0.01 or m["challenger"]["average_precision"] >= m["champion"]["average_precision"] + 0.01
    assert prov["data_window"]["seconds"] == 3600 and prov["targets"] == ["onnx"] and all(p["passed"] for p in prov["parity"])
    assert api("GET", "/api/v1/rollouts")[1]["rollouts"] == [], "approval mode starts no rollout"
    code, body, _ = api("POST", "/api/v1/rollouts", {"model": "churn", "version": 2})
    assert code == 400 and "waits for approval" in body["error"], "nor can an operator bypass the approval"

    shown = subprocess.run([sys.executable, "-m", "edgefleet_cli.main", "models", "show", "churn", "--server", served["server"].url,
                            "--token-file", str(served["server"].fleet.secrets.dir / "admin-token")], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "provenance:" in shown.stdout and '"version": 1' in shown.stdout and "data_window" in shown.stdout and "metrics" in shown.stdout
    code, r, _ = api("POST", "/api/v1/models/churn/versions/2/approve", {"by": "test"})
    assert code == 201 and r["version"] == 2 and r["steps"] == [10.0, 50.0, 100.0] and r["gates"]["ml"]["psi_threshold"] == 0.3
    prov = api("GET", "/api/v1/models/churn")[1]["provenance"]
    assert prov["approval"]["state"] == "approved" and prov["approval"]["rollout_id"] == r["id"] and prov["approval"]["by"] == "test"
    assert [x["id"] for x in prov["rollouts"]] == [r["id"]]
    assert api("POST", "/api/v1/models/churn/versions/2/approve")[0] == 409


def test_challenger_that_does_not_win_stops_with_exit_4_and_registers_nothing(served: dict[str, Any], keypair: dict[str, Any]) -> None:
    feed(served["sim"], make_telco_churn(1500, seed=21), "same")  # no drift: retraining cannot gain 0.05
    proc = retrain(served, keypair, "--margin", "0.05", "--alert", "7")
    assert proc.returncode == 4, proc.stderr
    assert "STOP: challenger did not beat champion v1 by 0.05 on AUROC or AP" in proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["decision"] == "challenger_lost"
    assert [v["version"] for v in served["api"]("GET", "/api/v1/models")[1]["models"][0]["versions"]] == [1]


def test_forced_shuffled_challenger_is_registered_as_forced_and_rolled_out_behind_the_ml_gate(served: dict[str, Any],
                                                                                              keypair: dict[str, Any]) -> None:
    """The retrain half of test_simulate_loop's bad-challenger run (slow: 37 s), kept in the default run: a challenger
    trained on shuffled labels loses, ``--force`` registers it anyway, marked forced, parity passed, and starts the
    10/50/100 rollout behind the default ML canary gate. That the gate then halts such a canary and rolls it back on
    real agents is test_ml_gate's shuffled case."""
    api = served["api"]
    feed(served["sim"], drifted(2000, seed=31), "bad")
    proc = retrain(served, keypair, "--trainer", f"{ROOT / 'examples' / 'churn_trainers.py'}:train_shuffled", "--margin", "0.01",
                   "--alert", "9", "--force")
    assert proc.returncode == 0, proc.stderr
    assert "challenger does NOT win; --force: continuing anyway (the canary gate decides)" in proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["decision"] == "rolled_out" and out["version"] == 2, out
    prov = api("GET", "/api/v1/models/churn/versions/2")[1]["provenance"]
    m = prov["metrics"]
    assert m["forced"] is True and m["won_on"] == [] and m["challenger"]["auroc"] < m["champion"]["auroc"], m
    assert all(p["passed"] for p in prov["parity"]), "the bad challenger passes parity"
    assert prov["parent"]["version"] == 1 and str(prov["trigger"]["alert"]["id"]) == "9"
    code, ro, _ = api("GET", f"/api/v1/rollouts/{out['rollout_id']}")
    assert code == 200 and ro["version"] == 2 and ro["steps"] == [10.0, 50.0, 100.0], ro
    assert ro["gates"]["ml"] == {"psi_threshold": 0.3, "max_auroc_drop": 0.1}, ro["gates"]
    assert [x["id"] for x in prov["rollouts"]] == [ro["id"]]


def test_retrain_cli_names_bad_input(served: dict[str, Any], keypair: dict[str, Any]) -> None:
    proc = retrain(served, keypair, "--trainer", "no_such_module:train")
    assert proc.returncode == 1 and "edgefleet: error: --trainer 'no_such_module:train': cannot import no_such_module" in proc.stderr
    proc = retrain(served, keypair)  # no labeled telemetry yet
    assert proc.returncode == 1 and "only 0 labeled rows in the window" in proc.stderr


def test_policy_retrain_entry_is_validated(served: dict[str, Any]) -> None:
    api = served["api"]
    ok = {"command": ["edgefleet", "retrain", "--model", "{model}", "--alert", "{alert}"], "approval": True, "on": ["performance"]}
    code, body, _ = api("PUT", "/api/v1/models/churn/policy", {"retrain": ok})
    assert code == 200 and body["policy"]["retrain"]["approval"] is True and body["policy"]["retrain"]["command"][1] == "retrain"
    code, body, _ = api("PUT", "/api/v1/models/churn/policy", {"fire_after": 2})  # a partial update keeps the retrain entry
    assert body["policy"]["retrain"]["on"] == ["performance"]
    for bad, message in ((["sh", "-c", "id"], "must start with"), (["edgefleet", "retrain", "{nope}"], "unknown placeholder")):
        code, body, _ = api("PUT", "/api/v1/models/churn/policy", {"retrain": {"command": bad}})
        assert code == 400 and body["error"].startswith("policy.retrain.command") and message in body["error"], body
    with pytest.raises(FleetError, match="policy.retrain.on"):
        retrain_policy.parse({"command": ["edgefleet", "retrain"], "on": ["weather"]})
