"""The fraud example's data generator, and one real day of its loop (fast: keeps the example from rotting)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from examples.fraud.data import COLUMNS, FEATURES, LABEL, NOISE, SPREAD, make_day, make_days


def test_days_have_the_kaggle_schema_a_realistic_fraud_rate_and_are_seeded() -> None:
    days = make_days(20_000, seed=7)
    assert sorted(days) == [1, 2, 3, 4, 5, 6]
    for d, df in days.items():
        assert list(df.columns) == COLUMNS and len(df) == 20_000
        assert set(df[LABEL].unique()) <= {0, 1} and df[LABEL].dtype == np.int64
        assert df["Time"].is_monotonic_increasing and (d - 1) * 86_400 <= df["Time"].min() and df["Time"].max() <= d * 86_400
        assert (df["Amount"] >= 0).all() and np.allclose(df["Amount"], df["Amount"].round(2))
    rate = sum(int(df[LABEL].sum()) for df in days.values()) / 120_000
    assert 0.0012 <= rate <= 0.0022, rate  # 0.17 %
    again = make_day(3, 20_000, seed=7)
    assert again.equals(days[3])
    assert not make_day(3, 20_000, seed=8).equals(days[3])


def test_frauds_are_separable_and_the_daily_drift_is_the_companions_ten_percent() -> None:
    day1, day2, day5 = (make_day(d, 40_000, seed=1, shift=d == 5) for d in (1, 2, 5))
    legit1, fraud1 = day1[day1[LABEL] == 0], day1[day1[LABEL] == 1]
    assert fraud1["V14"].mean() < legit1["V14"].mean() - 2 * SPREAD["V14"]  # shifted means, as Kaggle's V14
    assert abs(fraud1["V20"].mean() - legit1["V20"].mean()) < SPREAD["V20"]  # not every column tells
    ratio2 = {c: day2.loc[day2[LABEL] == 0, c].std() / legit1[c].std() for c in FEATURES if c != "Amount"}
    assert all(1 - NOISE - 0.03 < r < 1 + NOISE + 0.03 for r in ratio2.values()), ratio2  # 1 ± up to 10 % (+ sampling)
    assert max(abs(r - 1) for r in ratio2.values()) > 0.03  # and there is drift
    ratio5 = [day5.loc[day5[LABEL] == 0, c].std() / legit1[c].std() for c in FEATURES if c != "Amount"]
    assert max(abs(r - 1) for r in ratio5) > NOISE + 0.05  # the stronger drift of the shifted days
    with pytest.raises(ValueError, match="day must be >= 1"):
        make_day(0, 10)


def test_cbpe_takes_float32_probabilities_a_hair_above_one() -> None:
    """The fraud RF's ONNX artifact sums 20 float32 votes of 0.05 to 1.0000001; the monitor used to 500 on it."""
    from fleet_server.monitoring import stats

    assert 0.0 <= stats.estimated_auroc([1.0000001, 0.0, 0.5, 0.2]) <= 1.0
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        stats.estimated_auroc([1.01, 0.0])


def test_one_day_of_the_loop_on_a_real_fleet(tmp_path: Path) -> None:
    from examples.fraud.run import run

    lines: list[str] = []
    result = run(tmp_path / "out", rows=6000, seed=4, day_seconds=16.0, devices=2, days=1, shifted=(), log=lines.append)
    text = "\n".join(lines)
    assert "v1: RandomForest (20 trees, depth 20)" in text and "v1 on 2 gateways" in text
    row = next(line for line in lines if line.strip().startswith("1 "))
    assert "v1" in row and "ALERT" not in row
    (day,) = result["days"]
    v1 = day["by_version"][1]
    assert day["rows"] == 6000 and day["scored"] >= 3000, day  # all of them unless the machine is very busy (the table says so)
    assert v1["n"] == day["scored"] == v1["n_labeled"]  # every prediction reached the server, every label joined
    assert f"{day['scored']:>6}" in row
    assert v1["auroc"] is not None and v1["auroc"] >= 0.9 and 0 < v1["average_precision"] <= 1
    assert day["max_psi"]["psi"] is not None and day["score_psi"] is not None
    assert result["alerts"] == [] and result["retrain"] is None and result["devices"] == {"gw-01": 1, "gw-02": 1}
    assert (tmp_path / "out" / "result.json").is_file() and (tmp_path / "out" / "fraud-v1.tar").is_file()
    assert result["cdsw"]["answer"]["model_version"] == 1 and "CDSW model API: POST /api/v1/models/fraud/cdsw" in text


def test_a_folder_of_an_earlier_run_is_refused_in_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "fleet").mkdir()
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-m", "examples.fraud.run", "--out", str(tmp_path)], cwd=root, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"examples.fraud.run: error: --out {tmp_path}: holds the fleet server of an earlier run "
                                                f"({tmp_path / 'fleet'}); give a new folder or delete it"]
