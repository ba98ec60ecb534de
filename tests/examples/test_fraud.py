"""The whole fraud example, as a user runs it: ``python -m examples.fraud.run --out DIR`` (slow: about 3 minutes)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_six_days_alert_retrain_and_gated_rollout(tmp_path: Path) -> None:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "examples.fraud.run", "--out", str(tmp_path / "out")], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    seconds = time.monotonic() - t0
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    rows = {int(m.group(1)): m.group(0) for m in re.finditer(r"^\s*([1-6])\s+\d+\s+\d+\s+(v1|v1/v2|v2)\s+(\d\.\d{3}).*$", out, re.M)}
    assert sorted(rows) == [1, 2, 3, 4, 5, 6], out
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    days = {d["day"]: d for d in result["days"]}
    auroc = {d: days[d]["by_version"]["1"]["auroc"] for d in range(1, 6)}
    assert all(auroc[d] >= 0.9 for d in range(1, 5)), auroc            # the companion's noise alone: no alert
    assert auroc[5] < 0.9 and "ALERT" in rows[5], auroc                 # the stronger drift: below 0.9
    for d in range(1, 7):  # AUROC and AP on probabilities, printed; the 0/1 way reports less on every normal day
        v = days[d]["by_version"][str(days[d]["versions"][-1])]
        assert 0 < v["average_precision"] <= 1 and v["n_labeled"] == v["n"] and days[d]["scored"] >= 10_000
    assert all(days[d]["hard_auroc"] < days[d]["by_version"]["1"]["auroc"] for d in range(1, 5))
    assert days[5]["max_psi"]["psi"] > 0.1 > max(days[d]["max_psi"]["psi"] for d in range(1, 5))  # PSI sees the drift
    assert re.search(r"ALERT #\d+ performance v1: AUROC 0\.\d{3} < 0\.9", out)
    assert "[retrain] challenger wins" in out and re.search(r"retrain job succeeded in", out)
    assert re.search(r"v2 published \(onnx, signed", out)
    assert re.search(r"rollout #\d+ v2: running at step 1/3 \(10 %\)", out)       # gated steps, seen while day 6 runs
    assert re.search(r"rollout #\d+ of v2: COMPLETED", out), out[-2000:]
    assert days[6]["versions"] == [1, 2] and days[6]["by_version"]["2"]["auroc"] > days[6]["by_version"]["1"]["auroc"] + 0.1
    assert result["devices"] == {"gw-01": 2, "gw-02": 2, "gw-03": 2}
    assert result["cdsw"]["answer"]["model_version"] == 2 and result["cdsw"]["answer"]["result"] in (0, 1)
    assert re.search(r'CDSW model API: POST /api/v1/models/fraud/cdsw \{"feature": ".*-> \{"result": [01], "probability"', out)
    assert result["retrain"]["provenance"]["trigger"]["alert"]["id"] == result["alerts"][0]["id"]
    print(f"fraud example: {seconds:.0f}s wall, day-6 AUROC v1 {days[6]['by_version']['1']['auroc']:.3f} "
          f"v2 {days[6]['by_version']['2']['auroc']:.3f}")
