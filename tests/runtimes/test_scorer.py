"""The Python device runtime scores offline, verifies first, and refuses bad input clearly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgefleet.errors import VerificationError
from edgefleet_cli.samples.telco_churn import CATEGORICAL, NUMERIC
from runtimes.python import Scorer, ScoringInputError


def _records(frame: Any) -> list[dict[str, Any]]:
    out = []
    for rec in frame[CATEGORICAL + NUMERIC].to_dict(orient="records"):
        out.append({k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in rec.items()})
    return out


@pytest.mark.parametrize("backend", ["onnx", "pmml"])
def test_scores_match_the_source_model(backend: str, compiled: Any, train_model: Any, fresh_data: Any, keypair: dict[str, Any]) -> None:
    result = compiled("rf")
    scorer = Scorer.from_bundle(result.archive, keypair["public_path"], backend=backend)
    assert scorer.backend_name == backend and scorer.version == 1
    records = _records(fresh_data.head(200))
    expected = train_model("rf").predict_proba(fresh_data.head(200)[CATEGORICAL + NUMERIC])[:, 1]
    many = scorer.score_many(records)
    one = [scorer.score(r) for r in records[:50]]
    assert np.abs(np.array([p.probability for p in many]) - expected).max() <= 1e-5
    assert [p.probability for p in one] == pytest.approx([p.probability for p in many[:50]], abs=1e-12)
    assert all(p.label == int(p.probability > 0.5) for p in many)
    assert scorer.check_canaries() == []


def test_default_backend_is_onnx_and_keys_are_chosen_by_id(compiled: Any, keypair: dict[str, Any], tmp_path: Path) -> None:
    from edgefleet import keys

    _, other = keys.generate_keypair(tmp_path / "k")
    scorer = Scorer.from_bundle(compiled("lr").archive, [keys.load_public_key(other), keypair["public"]])
    assert scorer.backend_name == "onnx"
    with pytest.raises(VerificationError):
        Scorer.from_bundle(compiled("lr").archive, other)


@pytest.mark.parametrize(
    "change, field, reason",
    [
        ({"tenure": "twelve"}, "tenure", "expected a number"),
        ({"MonthlyCharges": float("inf")}, "MonthlyCharges", "not finite"),
        ({"Contract": 2}, "Contract", "expected a string category, got int"),
        ({"customer_since": "2020"}, "customer_since", "unexpected field"),
    ],
)
def test_bad_records_raise_scoring_input_error(change: dict, field: str, reason: str, compiled: Any, keypair: dict[str, Any]) -> None:
    scorer = Scorer.from_bundle(compiled("lr").archive, keypair["public"])
    rec = dict(scorer.manifest["canary"]["rows"][0]["input"])
    rec.update(change)
    with pytest.raises(ScoringInputError) as info:
        scorer.score(rec)
    assert info.value.field == field and reason in str(info.value)
    with pytest.raises(ScoringInputError):
        scorer.score_many([rec])


def test_missing_field_is_named(compiled: Any, keypair: dict[str, Any]) -> None:
    scorer = Scorer.from_bundle(compiled("lr").archive, keypair["public"])
    rec = dict(scorer.manifest["canary"]["rows"][0]["input"])
    del rec["Contract"]
    with pytest.raises(ScoringInputError, match="'Contract': row 0: missing field"):
        scorer.score(rec)


def test_score_cli(compiled: Any, keypair: dict[str, Any], fresh_data: Any, tmp_path: Path) -> None:
    import json

    inp = tmp_path / "in.csv"
    fresh_data.head(30).to_csv(inp, index=False)
    out = tmp_path / "scores.jsonl"
    proc = subprocess.run([sys.executable, "-m", "edgefleet_cli.main", "score", str(compiled("gb").archive), "--pubkey", str(keypair["public_path"]),
                           "--input", str(inp), "--output", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 30 and all(0 <= r["probability"] <= 1 and r["model_version"] == 1 and r["backend"] == "onnx" for r in rows)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"tenure": 3}) + "\n")
    proc = subprocess.run([sys.executable, "-m", "edgefleet_cli.main", "score", str(compiled("gb").archive), "--pubkey", str(keypair["public_path"]),
                           "--input", str(bad)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "edgefleet: error:" in proc.stderr and "missing field" in proc.stderr and "Traceback" not in proc.stderr


def test_a_reported_probability_is_always_in_0_1(compiled: Any, keypair: dict[str, Any]) -> None:
    """float32 tree ensembles can sum to 1.0000001 or -0.0; the scorer reports [0, 1] and labels from that value."""
    scorer = Scorer.from_bundle(compiled("rf").archive, keypair["public_path"])
    hi = scorer._prediction([-1e-8, 1.0000001])
    assert hi.probability == 1.0 and hi.probabilities == (0.0, 1.0) and hi.label == scorer.classes[1]
    lo = scorer._prediction([1.0000001, -0.0])
    assert lo.probability == 0.0 and lo.probabilities == (1.0, 0.0) and lo.label == scorer.classes[0]
