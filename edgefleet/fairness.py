"""Group fairness of a binary classifier: per-group rates, disparities against a reference
group, bootstrap intervals and verdicts, in numpy alone.

The fleet server's monitor (``fleet_server.monitoring.fairness``) and the retraining job
(``compiler.retrain``, champion against challenger) both use it, so it lives in the contract
that both may import. The definitions are Fairlearn's (``fairlearn.metrics.MetricFrame``;
tests/fleet_server/monitoring/test_fairness.py checks every value against it within 1e-12):

Per group ``g`` (rows whose sensitive field has that value)
    * ``selection_rate``: share predicted positive (``score > threshold``, as the device
      Scorer labels), over every prediction of the group, labeled or not;
    * ``tpr`` = TP / P and ``fpr`` = FP / N over the group's labeled rows;
    * ``calibration_in_the_large`` = mean score - observed positive rate (labeled rows);
    * ``auroc`` (labeled rows, both classes present), through the caller's AUROC function.

Disparities of group ``g`` against the reference ``r`` (Fairlearn's ``between_groups`` value
on the rows of the two groups)
    * ``demographic_parity_difference`` = ``|sel_g - sel_r|``;
    * ``demographic_parity_ratio`` = ``min(sel_g, sel_r) / max(sel_g, sel_r)``;
    * ``equalized_odds_difference`` = ``max(|tpr_g - tpr_r|, |fpr_g - fpr_r|)``.
    The signed gaps (``g - r``) are reported too, so a reader sees the direction.

Intervals
    A stratified bootstrap: each group's rows (for TPR/FPR: each group's positives and
    negatives) are resampled with replacement at their own size. The share of a resample that
    is predicted positive is then exactly Binomial(n, p_hat) / n, so the resamples are drawn
    as binomials (the same distribution as resampling rows, at no cost per row). Percentile
    intervals of the *signed* gap give the interval of its absolute value (it contains 0 when
    the signed one straddles 0). The equalized-odds interval is simultaneous: the TPR and FPR
    gaps each at level ``1 - alpha/2`` (Bonferroni), and ``max`` of the two intervals' ends.
    The generator is seeded by the caller, so a pass re-run on the same rows gives the same
    interval and the same verdict.

Verdicts (the drift verdicts' discipline: no flip because n grew, no alarm from 12 customers)
    * ``insufficient_data``: a group's denominator (rows for selection rate, positives and
      negatives for TPR/FPR) is below ``min_count``, on either side;
    * ``disparity``: the whole interval lies beyond the tolerance (lower end of the difference
      above ``tolerance``; upper end of the ratio below ``min_ratio``);
    * ``within_tolerance``: the whole interval lies inside it;
    * ``inconclusive``: the interval contains the tolerance. Only the first and third change an
      alert's hysteresis. A fixed true disparity therefore has one verdict at every n large
      enough to see it; more rows only move ``inconclusive`` to the right side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

METRICS = ("demographic_parity_difference", "demographic_parity_ratio", "equalized_odds_difference")
Auroc = Callable[[np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class FairnessPolicy:
    """When a disparity counts; see "Verdicts" in the module docstring."""

    tolerance: float = 0.1     # largest acceptable |difference| of selection rate, TPR or FPR
    min_ratio: float = 0.8     # smallest acceptable demographic-parity ratio (the four-fifths rule)
    min_count: int = 50        # a group's rows (positives, negatives for TPR/FPR) below which there is no verdict
    confidence: float = 0.95   # of each interval
    n_boot: int = 2000         # bootstrap resamples


def _rate(k: int, n: int) -> float:
    return k / n if n else math.nan


def group_metrics(scores: npt.ArrayLike, predicted: npt.ArrayLike, labels: npt.ArrayLike | None = None,
                  *, auroc: Auroc | None = None) -> dict[str, Any]:
    """One group's counts and rates. ``labels`` (0/1, NaN for unlabeled) aligns with ``scores``."""
    s = np.asarray(scores, dtype=np.float64)
    yp = np.asarray(predicted, dtype=bool)
    y = np.full(s.shape, np.nan) if labels is None else np.asarray(labels, dtype=np.float64)
    lab = ~np.isnan(y)
    yl, pl, sl = y[lab] == 1.0, yp[lab], s[lab]
    n_pos, n_neg = int(yl.sum()), int((~yl).sum())
    tp, fp = int((pl & yl).sum()), int((pl & ~yl).sum())
    out: dict[str, Any] = {
        "n": int(s.size), "n_selected": int(yp.sum()), "selection_rate": _rate(int(yp.sum()), int(s.size)),
        "n_labeled": int(lab.sum()), "n_positive": n_pos, "n_negative": n_neg, "tp": tp, "fp": fp,
        "tpr": _rate(tp, n_pos), "fpr": _rate(fp, n_neg),
        "mean_score": float(sl.mean()) if sl.size else math.nan,
        "observed_rate": float(yl.mean()) if yl.size else math.nan,
        "auroc": math.nan,
    }
    out["calibration_in_the_large"] = out["mean_score"] - out["observed_rate"]
    if auroc is not None and n_pos and n_neg:
        out["auroc"] = float(auroc(sl, yl.astype(np.float64)))
    return out


def _abs_interval(lo: float, hi: float) -> tuple[float, float]:
    """Interval of |d| from an interval [lo, hi] of d."""
    if lo <= 0.0 <= hi:
        return 0.0, max(-lo, hi)
    return min(abs(lo), abs(hi)), max(abs(lo), abs(hi))


def _draws(rng: np.random.Generator, k: int, n: int, size: int) -> np.ndarray:
    return rng.binomial(n, k / n, size=size) / n if n else np.full(size, np.nan)


def _verdict(lo: float, hi: float, limit: float, *, higher_is_worse: bool, enough: bool) -> str:
    if not enough:
        return "insufficient_data"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "inconclusive"
    bad, good = (lo > limit, hi <= limit) if higher_is_worse else (hi < limit, lo >= limit)
    return "disparity" if bad else "within_tolerance" if good else "inconclusive"


def compare(group: Mapping[str, Any], reference: Mapping[str, Any], policy: FairnessPolicy = FairnessPolicy(),
            *, seed: int = 0) -> dict[str, Any]:
    """Disparities of ``group`` against ``reference`` (both from ``group_metrics``), with intervals and verdicts."""
    rng = np.random.default_rng(seed)
    B, alpha = policy.n_boot, 1.0 - policy.confidence
    g, r = group, reference
    sel_g, sel_r = _draws(rng, g["n_selected"], g["n"], B), _draws(rng, r["n_selected"], r["n"], B)
    tpr_g, tpr_r = _draws(rng, g["tp"], g["n_positive"], B), _draws(rng, r["tp"], r["n_positive"], B)
    fpr_g, fpr_r = _draws(rng, g["fp"], g["n_negative"], B), _draws(rng, r["fp"], r["n_negative"], B)

    def pct(x: np.ndarray, a: float) -> tuple[float, float]:
        x = x[np.isfinite(x)]
        if x.size < B:
            return math.nan, math.nan
        lo, hi = np.quantile(x, [a / 2, 1 - a / 2])
        return float(lo), float(hi)

    dp_gap = g["selection_rate"] - r["selection_rate"]
    tpr_gap, fpr_gap = g["tpr"] - r["tpr"], g["fpr"] - r["fpr"]
    dp_ci = _abs_interval(*pct(sel_g - sel_r, alpha))
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio_draws = np.minimum(sel_g, sel_r) / np.maximum(sel_g, sel_r)
    hi_sel = max(g["selection_rate"], r["selection_rate"])
    ratio = min(g["selection_rate"], r["selection_rate"]) / hi_sel if hi_sel > 0 else math.nan
    ratio_ci = pct(ratio_draws, alpha)
    t_ci = _abs_interval(*pct(tpr_g - tpr_r, alpha / 2))
    f_ci = _abs_interval(*pct(fpr_g - fpr_r, alpha / 2))
    eo_ci = (max(t_ci[0], f_ci[0]), max(t_ci[1], f_ci[1]))
    eo = max(abs(tpr_gap), abs(fpr_gap))
    n_ok = min(g["n"], r["n"]) >= policy.min_count
    eo_ok = min(g["n_positive"], g["n_negative"], r["n_positive"], r["n_negative"]) >= policy.min_count
    tol = policy.tolerance
    return {
        "gaps": {"selection_rate": dp_gap, "tpr": tpr_gap, "fpr": fpr_gap,
                 "calibration_in_the_large": g["calibration_in_the_large"] - r["calibration_in_the_large"],
                 "auroc": g["auroc"] - r["auroc"]},
        "demographic_parity_difference": {"value": abs(dp_gap), "ci": list(dp_ci), "limit": tol,
                                          "verdict": _verdict(*dp_ci, tol, higher_is_worse=True, enough=n_ok)},
        "demographic_parity_ratio": {"value": ratio, "ci": list(ratio_ci), "limit": policy.min_ratio,
                                     "verdict": _verdict(*ratio_ci, policy.min_ratio, higher_is_worse=False, enough=n_ok)},
        "equalized_odds_difference": {"value": eo, "ci": list(eo_ci), "limit": tol, "tpr_gap_ci": list(t_ci), "fpr_gap_ci": list(f_ci),
                                      "verdict": _verdict(*eo_ci, tol, higher_is_worse=True, enough=eo_ok)},
    }


def seed_of(*parts: Any) -> int:
    """A stable seed from the window, field and group (Python's ``hash`` of str is salted per process)."""
    h = 1469598103934665603
    for byte in "\x1f".join(str(p) for p in parts).encode():
        h = ((h ^ byte) * 1099511628211) % (1 << 64)
    return h


def by_group(values: Sequence[Any], scores: npt.ArrayLike, predicted: npt.ArrayLike, labels: npt.ArrayLike | None = None,
             *, auroc: Auroc | None = None) -> dict[str, dict[str, Any]]:
    """``group_metrics`` for each distinct value (as text; ``None`` is ``<missing>``), in sorted order."""
    keys = np.array(["<missing>" if v is None else str(v) for v in values], dtype=object)
    s = np.asarray(scores, dtype=np.float64)
    yp = np.asarray(predicted, dtype=bool)
    y = None if labels is None else np.asarray(labels, dtype=np.float64)
    out = {}
    for k in sorted(set(keys.tolist())):
        m = keys == k
        out[k] = group_metrics(s[m], yp[m], None if y is None else y[m], auroc=auroc)
    return out


def evaluate(groups: Mapping[str, Mapping[str, Any]], reference: str | None, policy: FairnessPolicy = FairnessPolicy(),
             *, seed_parts: Sequence[Any] = ()) -> dict[str, Any]:
    """Every group against the reference (``None``: the largest group); the reference must be present."""
    if not groups:
        return {"reference": reference, "reference_present": False, "comparisons": {}}
    ref = reference if reference is not None else max(groups, key=lambda k: (groups[k]["n"], k))
    if ref not in groups:
        return {"reference": ref, "reference_present": False, "comparisons": {}}
    comps = {k: compare(g, groups[ref], policy, seed=seed_of(*seed_parts, k)) for k, g in groups.items() if k != ref}
    return {"reference": ref, "reference_present": True, "comparisons": comps}
