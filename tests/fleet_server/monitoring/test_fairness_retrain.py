"""``edgefleet retrain`` (a real subprocess against a real fleet server) reports both models' fairness,
and a policy with ``fairness_gate`` refuses a challenger that worsens a disparity beyond tolerance.

The unfair challenger is a logistic regression whose senior citizens' churn scores are multiplied
by 0.2 (it almost never selects a senior for a retention offer). ``--margin -1`` lets any
challenger win on AUROC/AP, so the fairness policy alone decides.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from edgefleet_cli.samples.telco_churn import make_telco_churn
from tests.fleet_server.monitoring.test_retrain_cli import feed, served  # noqa: F401 - the shared server fixture

TRAINERS = '''
from edgefleet_cli.samples.telco_churn import fit_lr


class SeniorPenalty:
    """fit_lr's model with senior citizens' churn scores cut to a fifth."""

    def __init__(self, inner):
        self.inner, self.classes_, self.feature_names_in_ = inner, inner.classes_, inner.feature_names_in_

    def predict_proba(self, X):
        p = self.inner.predict_proba(X).copy()
        senior = X["SeniorCitizen"].to_numpy() == 1
        p[senior, 1] *= 0.2
        p[senior, 0] = 1.0 - p[senior, 1]
        return p


def unfair(train_df):
    return SeniorPenalty(fit_lr(train_df))


def fair(train_df):
    return fit_lr(train_df)
'''
POLICY = {"fairness_fields": ["SeniorCitizen"], "fairness_reference": {"SeniorCitizen": 0}, "fairness_threshold": 0.3,
          "fairness_min_count": 30, "fairness_gate": True}


def run_retrain(served: dict[str, Any], keypair: dict[str, Any], trainer: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:  # noqa: F811
    path = tmp_path / "fairness_trainers.py"
    path.write_text(TRAINERS)
    env = {**os.environ, "EDGEFLEET_ADMIN_TOKEN": served["server"].fleet.secrets.admin_token}
    argv = [sys.executable, "-m", "edgefleet_cli.main", "retrain", "--server", served["server"].url, "--model", "churn",
            "--trainer", f"{path}:{trainer}", "--reference-data", str(served["reference"]), "--key", str(keypair["private_path"]),
            "--window-seconds", "3600", "--quiet", "--margin", "-1", "--approve-required"]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=240)


def test_challenger_that_worsens_a_disparity_is_refused_with_the_reason_and_a_fair_one_carries_both_metrics(
        served: dict[str, Any], keypair: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    api = served["api"]
    assert api("PUT", "/api/v1/models/churn/policy", POLICY)[0] == 200
    feed(served["sim"], make_telco_churn(3000, seed=31), "f")
    proc = run_retrain(served, keypair, "unfair", tmp_path)
    assert proc.returncode == 4, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["decision"] == "challenger_refused" and out["version"] is None, out
    assert "refused by the fairness policy" in out["reason"] and "SeniorCitizen=1" in out["reason"], out["reason"]
    prov = out["provenance"]
    assert prov["refused"] == out["reason"]
    fair = prov["metrics"]["fairness"]
    per = fair["by_field"]["SeniorCitizen"]
    chal = per["challenger"]["comparisons"]["1"]["equalized_odds_difference"]
    champ = per["champion"]["comparisons"]["1"]["equalized_odds_difference"]
    assert chal["verdict"] == "disparity" and chal["ci"][0] > 0.1 and chal["value"] > champ["value"], (chal, champ)
    assert per["challenger"]["groups"]["1"]["selection_rate"] < per["champion"]["groups"]["1"]["selection_rate"]
    assert "STOP: challenger refused by the fairness policy" in proc.stderr
    assert [v["version"] for v in api("GET", "/api/v1/models")[1]["models"][0]["versions"]] == [1], "nothing registered"

    proc = run_retrain(served, keypair, "fair", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["decision"] == "awaiting_approval"
    prov = api("GET", "/api/v1/models/churn/versions/2")[1]["provenance"]
    f2 = prov["metrics"]["fairness"]
    assert f2["gate"] is True and f2["refusals"] == [] and f2["threshold"] == 0.3
    for who in ("champion", "challenger"):
        groups = f2["by_field"]["SeniorCitizen"][who]["groups"]
        assert set(groups) == {"0", "1"} and all(g["n_labeled"] > 0 and g["tpr"] is not None for g in groups.values())
