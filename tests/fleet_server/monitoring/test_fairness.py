"""Fairness formulas (``edgefleet.fairness``) against Fairlearn's ``MetricFrame`` and metric functions,
and the coverage of their bootstrap intervals.

Fairlearn is the oracle only (the ``dev`` extra): the server computes the same numbers in numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    equalized_odds_difference,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from sklearn.metrics import roc_auc_score

from edgefleet import fairness as F
from fleet_server.monitoring import stats

TOL = 1e-12


def rows(seed: int, n: int = 3000) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    group = rng.choice(np.array(["A", "B", "C"], dtype=object), size=n, p=[0.6, 0.3, 0.1])
    y = (rng.random(n) < np.where(group == "B", 0.35, 0.25)).astype(float)
    score = np.clip(0.25 + 0.3 * y + rng.normal(0, 0.2, n) - 0.08 * (group == "C"), 0, 1)
    labeled = rng.random(n) < 0.7  # delayed labels: not every prediction has one yet
    return {"group": group, "y": np.where(labeled, y, np.nan), "score": score, "labeled": labeled}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_group_metrics_and_disparities_equal_fairlearn(seed: int) -> None:
    d = rows(seed)
    threshold = 0.4
    pred = d["score"] > threshold
    groups = F.by_group(d["group"].tolist(), d["score"], pred, d["y"], auroc=stats.auroc)
    lab = d["labeled"]
    yl, pl, sl, gl = d["y"][lab].astype(int), pred[lab].astype(int), d["score"][lab], d["group"][lab]
    sel = MetricFrame(metrics=selection_rate, y_true=np.zeros(pred.size), y_pred=pred.astype(int), sensitive_features=d["group"])
    rates = MetricFrame(metrics={"tpr": true_positive_rate, "fpr": false_positive_rate}, y_true=yl, y_pred=pl, sensitive_features=gl)
    scored = MetricFrame(metrics={"auroc": roc_auc_score,
                                  "citl": lambda t, p: float(np.mean(p) - np.mean(t))},
                         y_true=yl, y_pred=sl, sensitive_features=gl)
    for g, m in groups.items():
        assert abs(m["selection_rate"] - sel.by_group[g]) < TOL
        assert abs(m["tpr"] - rates.by_group.loc[g, "tpr"]) < TOL
        assert abs(m["fpr"] - rates.by_group.loc[g, "fpr"]) < TOL
        assert abs(m["auroc"] - scored.by_group.loc[g, "auroc"]) < TOL
        assert abs(m["calibration_in_the_large"] - scored.by_group.loc[g, "citl"]) < TOL
    result = F.evaluate(groups, "A")
    assert result["reference"] == "A" and set(result["comparisons"]) == {"B", "C"}
    for g, comp in result["comparisons"].items():
        both = np.isin(d["group"], ["A", g])
        both_l = both & lab
        kw_all = {"y_true": np.zeros(int(both.sum())), "y_pred": pred[both].astype(int), "sensitive_features": d["group"][both]}
        assert abs(comp["demographic_parity_difference"]["value"] - demographic_parity_difference(**kw_all)) < TOL
        assert abs(comp["demographic_parity_ratio"]["value"] - demographic_parity_ratio(**kw_all)) < TOL
        eo = equalized_odds_difference(d["y"][both_l].astype(int), pred[both_l].astype(int), sensitive_features=d["group"][both_l])
        assert abs(comp["equalized_odds_difference"]["value"] - eo) < TOL
        assert abs(comp["gaps"]["tpr"] - (rates.by_group.loc[g, "tpr"] - rates.by_group.loc["A", "tpr"])) < TOL
        for metric in F.METRICS:
            lo, hi = comp[metric]["ci"]
            assert lo <= comp[metric]["value"] <= hi, (g, metric, comp[metric])


def test_default_reference_is_the_largest_group_and_a_missing_value_is_its_own_group() -> None:
    groups = F.by_group(["x", "x", None, "y", "x"], [0.9, 0.1, 0.8, 0.7, 0.2], [True, False, True, True, False])
    assert set(groups) == {"x", "y", "<missing>"}
    assert F.evaluate(groups, None)["reference"] == "x"
    assert F.evaluate(groups, "z")["reference_present"] is False


def test_verdicts_need_the_minimum_count_and_an_interval_clear_of_the_tolerance() -> None:
    pol = F.FairnessPolicy(tolerance=0.1, min_count=50)

    def group(n: int, sel: float, n_pos: int, tpr: float, fpr: float) -> dict[str, Any]:
        score = np.r_[np.ones(round(n * sel)), np.zeros(n - round(n * sel))]
        return F.group_metrics(score, score > 0.5, None) | {
            "n_positive": n_pos, "n_negative": n_pos, "tp": round(n_pos * tpr), "fp": round(n_pos * fpr),
            "tpr": round(n_pos * tpr) / n_pos, "fpr": round(n_pos * fpr) / n_pos}

    ref = group(4000, 0.3, 1000, 0.6, 0.1)
    # 12 customers with a huge gap: no verdict at all
    tiny = F.compare(group(12, 0.9, 6, 0.0, 0.9), ref, pol)
    assert tiny["demographic_parity_difference"]["verdict"] == "insufficient_data"
    assert tiny["equalized_odds_difference"]["verdict"] == "insufficient_data"
    # a true gap of 0.05 (inside the tolerance) is never called a disparity, whatever n; large n says so
    verdicts = [F.compare(group(n, 0.35, n // 4, 0.65, 0.1), ref, pol)["demographic_parity_difference"]["verdict"]
                for n in (200, 2000, 20_000, 200_000)]
    assert "disparity" not in verdicts and verdicts[-1] == "within_tolerance", verdicts
    # a true gap of 0.25 is a disparity from a few hundred rows on, and stays one
    verdicts = [F.compare(group(n, 0.3, n // 4, 0.35, 0.1), ref, pol)["equalized_odds_difference"]["verdict"]
                for n in (800, 8000, 80_000)]
    assert verdicts == ["disparity"] * 3, verdicts
    # same rows, same seed: same interval (a re-run monitor pass cannot flip)
    a = F.compare(group(300, 0.4, 80, 0.5, 0.1), ref, pol, seed=F.seed_of("w", 1))
    b = F.compare(group(300, 0.4, 80, 0.5, 0.1), ref, pol, seed=F.seed_of("w", 1))
    assert all(a[m] == b[m] for m in F.METRICS)


def _coverage(reps: int, n_ref: int, n_grp: int, seed: int) -> dict[str, float]:
    """Share of simulated samples whose intervals contain the true disparities."""
    rng = np.random.default_rng(seed)
    base = {"ref": (0.5, 0.30, 0.60, 0.10), "grp": (0.25, 0.25, 0.45, 0.15)}  # P(group), P(y=1), P(sel|y=1), P(sel|y=0)
    sel_true = {k: b[1] * b[2] + (1 - b[1]) * b[3] for k, b in base.items()}
    truth = {"demographic_parity_difference": abs(sel_true["grp"] - sel_true["ref"]),
             "demographic_parity_ratio": min(sel_true.values()) / max(sel_true.values()),
             "equalized_odds_difference": max(abs(base["grp"][2] - base["ref"][2]), abs(base["grp"][3] - base["ref"][3]))}
    hits = dict.fromkeys(truth, 0)
    pol = F.FairnessPolicy(n_boot=1000)
    for _ in range(reps):
        groups = {}
        for k, n in (("ref", n_ref), ("grp", n_grp)):
            _, py, tpr, fpr = base[k]
            y = rng.random(n) < py
            pred = rng.random(n) < np.where(y, tpr, fpr)
            groups[k] = F.group_metrics(pred.astype(float), pred, y.astype(float))
        comp = F.compare(groups["grp"], groups["ref"], pol, seed=int(rng.integers(1 << 62)))
        for m, t in truth.items():
            lo, hi = comp[m]["ci"]
            hits[m] += lo <= t <= hi
    return {m: h / reps for m, h in hits.items()}


def test_intervals_cover_the_true_disparity_small_run() -> None:
    cov = _coverage(40, 1200, 400, seed=11)
    assert all(c >= 0.85 for c in cov.values()), cov


@pytest.mark.slow
def test_intervals_cover_the_true_disparity_in_90_percent_of_200_repetitions() -> None:
    for n_ref, n_grp, seed in ((1200, 400, 1), (4000, 300, 2)):
        cov = _coverage(200, n_ref, n_grp, seed=seed)
        assert all(c >= 0.90 for c in cov.values()), (n_ref, n_grp, cov)
