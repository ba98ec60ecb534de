"""Drift and performance statistics on binned counts and scores, in numpy alone.

Everything here is a pure function of arrays (or a small state object), so the server can
compute it from device sketches without raw data and tests can check each formula against
scipy and scikit-learn.

Drift, for two histograms over the same bins (reference counts ``r``, current counts ``c``)
-------------------------------------------------------------------------------------------
* **PSI** ``= sum_i (q_i - p_i) * ln(q_i / p_i)`` with ``p = (r + eps) / sum(r + eps)`` and
  ``q = (c + eps) / sum(c + eps)``, over the bins that are non-empty in at least one
  histogram. ``eps`` is a pseudo-count (default 0.5, Jeffreys) added to every kept bin of both
  histograms: an empty bin then costs a finite amount that shrinks as n grows, instead of the
  ``ln(q/0)`` blow-up or the n-independent floor of ``max(p, 1e-4)``.
* **Null distribution of PSI.** PSI is the symmetric Kullback-Leibler divergence; to second
  order it equals ``sum (q - p)^2 / pi``, and for two independent multinomial samples of one
  distribution ``(q_i - p_i)`` has variance ``pi_i (1 - pi_i) (1/n1 + 1/n2)``. Hence
  ``PSI / (1/n1 + 1/n2) ~ chi2(k - 1)`` with ``k`` kept bins, and ``E[PSI | no drift] ~
  (k - 1)(1/n1 + 1/n2)``. This is the noise floor a window of ``n`` rows shows with no drift.
* **KS on binned data.** ``D = max_j |F_ref(j) - F_cur(j)|`` over the bin boundaries (missing
  values excluded). The true KS statistic is a supremum over every x, so the binned ``D`` is a
  *lower bound* of it. The p-value is the asymptotic Kolmogorov tail ``Q(lambda) = 2 sum_j
  (-1)^(j-1) exp(-2 j^2 lambda^2)`` with ``lambda = (sqrt(ne) + 0.12 + 0.11 / sqrt(ne)) D``
  (Stephens' small-sample correction) and effective ``ne = n1 n2 / (n1 + n2)``. With ties from
  binning the test is conservative. KS is reported, not used for verdicts: at large n it
  rejects for shifts of no practical size.
* **chi2** test of homogeneity on the 2 x k table (categoricals, with their ``unseen`` and
  ``missing`` buckets appended by the caller): ``sum (O - E)^2 / E``, ``dof = k - 1`` over the
  bins non-empty in either row, p from the chi-square survival function.

Drift verdicts (:func:`drift_decision`)
---------------------------------------
* below ``min_count`` current rows: ``insufficient_data``, never a verdict;
* ``drift`` needs both a **material** effect, ``PSI - E[PSI | no drift] > psi_threshold`` (the
  noise floor is subtracted, so small windows do not look drifted just because they are small),
  **and** a **significant** one, ``chi2_sf(PSI / (1/n1 + 1/n2), k - 1) < alpha``.
  A fixed shift therefore has one verdict at every n large enough to see it: an immaterial
  shift stays ``no_drift`` however large n grows (where KS and chi2 p-values go to zero), and a
  material one becomes ``drift`` as soon as n can tell it from noise.
* Near the threshold a small window still lands on either side by chance: a true PSI of 0.06
  is called drift in about 15% of 200-row windows against 3,000 reference rows (a raw
  ``PSI > 0.1`` rule: about 50%), and in none from a few thousand rows. ``min_count`` trades
  alert latency for this, and the hysteresis below absorbs it. The reference sample's own size
  puts a floor under the noise that no current window can remove.
* :class:`AlertState` adds hysteresis over windows: it fires after ``fire_after`` consecutive
  drifting windows and clears after ``clear_after`` consecutive clean ones, so one noisy window
  neither raises nor clears an alert (repeated per-window tests inflate false alarms).

Performance
-----------
* **Realized AUROC/AP** from labels, with scikit-learn's tie handling: one ROC/PR point per
  distinct score, trapezoids for AUROC, ``AP = sum_n (R_n - R_(n-1)) P_n`` without interpolation.
* **Estimated AUROC/AP (CBPE)** from scores alone: each row counts as ``p`` of a positive and
  ``1 - p`` of a negative, which gives the *expected* confusion matrix at every threshold, and the
  same curve code runs on those weights. Assumptions: the scores are calibrated (``P(y=1 | p) =
  p``) and there is no concept drift (``P(y | x)`` unchanged). Covariate shift is fine; when
  ``P(y | x)`` changes (an outage that makes fiber customers churn), the scores do not move,
  so the estimate stays where it was while the realized metrics move. Check calibration with
  :func:`calibration_check` on labeled data, at deployment and again whenever labels arrive.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

DEFAULT_EPS = 0.5  # PSI pseudo-count per bin (in rows, not a proportion)


# ---------------------------------------------------------------- special functions


def _gamma_q(a: float, x: float) -> float:
    """Regularized upper incomplete gamma Q(a, x): series below a+1, continued fraction above."""
    if x <= 0.0:
        return 1.0
    lg = math.lgamma(a)
    if x < a + 1.0:
        term = total = 1.0 / a
        ap = a
        for _ in range(10_000):
            ap += 1.0
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(-x + a * math.log(x) - lg))
    tiny = 1e-300  # modified Lentz
    b = x + 1.0 - a
    c, d = 1.0 / tiny, 1.0 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return min(1.0, math.exp(-x + a * math.log(x) - lg) * h)


def chi2_sf(x: float, dof: int) -> float:
    """P(X > x) for X ~ chi2(dof)."""
    if dof <= 0:
        return float("nan")
    return _gamma_q(dof / 2.0, x / 2.0)


@functools.lru_cache(maxsize=1024)
def chi2_isf(alpha: float, dof: int) -> float:
    """The x with chi2_sf(x, dof) = alpha (bisection; the sf is monotone)."""
    lo, hi = 0.0, max(10.0, 10.0 * dof)
    while chi2_sf(hi, dof) > alpha:
        hi *= 2.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if chi2_sf(mid, dof) > alpha else (lo, mid)
    return 0.5 * (lo + hi)


def kolmogorov_sf(lam: float) -> float:
    """P(K > lam) for the Kolmogorov distribution (the KS statistic times sqrt(n), n -> inf)."""
    if lam <= 0.0:
        return 1.0
    j = np.arange(1, 101, dtype=np.float64)
    if lam < 1.18:  # the theta-function form converges fast for small lam
        cdf = math.sqrt(2.0 * math.pi) / lam * float(np.sum(np.exp(-((2.0 * j - 1.0) ** 2) * math.pi**2 / (8.0 * lam**2))))
        return min(1.0, max(0.0, 1.0 - cdf))
    return min(1.0, max(0.0, float(2.0 * np.sum((-1.0) ** (j - 1.0) * np.exp(-2.0 * j**2 * lam**2)))))


# ---------------------------------------------------------------- drift statistics


def _pair(ref_counts: ArrayLike, cur_counts: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(ref_counts, dtype=np.float64)
    c = np.asarray(cur_counts, dtype=np.float64)
    if r.shape != c.shape or r.ndim != 1:
        raise ValueError(f"histograms must be 1-D with the same bins, got {r.shape} and {c.shape}")
    if np.any(r < 0) or np.any(c < 0) or not (np.all(np.isfinite(r)) and np.all(np.isfinite(c))):
        raise ValueError("counts must be finite and non-negative")
    keep = (r + c) > 0  # a bin empty on both sides carries no information
    return r[keep], c[keep]


def psi(ref_counts: ArrayLike, cur_counts: ArrayLike, eps: float = DEFAULT_EPS) -> float:
    """Population Stability Index with ``eps`` pseudo-counts per kept bin (module docstring)."""
    r, c = _pair(ref_counts, cur_counts)
    if r.sum() == 0 or c.sum() == 0:
        return float("nan")
    p = (r + eps) / (r + eps).sum()
    q = (c + eps) / (c + eps).sum()
    return float(np.sum((q - p) * np.log(q / p)))


def psi_null_mean(ref_counts: ArrayLike, cur_counts: ArrayLike) -> float:
    """E[PSI] with no drift at these sample sizes: (k - 1)(1/n1 + 1/n2)."""
    r, c = _pair(ref_counts, cur_counts)
    if r.sum() == 0 or c.sum() == 0:
        return float("nan")
    return float((r.size - 1) * (1.0 / r.sum() + 1.0 / c.sum()))


class KSResult(NamedTuple):
    statistic: float  # binned D: a lower bound of the continuous KS statistic
    pvalue: float     # asymptotic Kolmogorov tail at the effective n


def ks_binned(ref_counts: ArrayLike, cur_counts: ArrayLike) -> KSResult:
    """Two-sample KS from ordered bin counts (missing values must be left out by the caller)."""
    r = np.asarray(ref_counts, dtype=np.float64)
    c = np.asarray(cur_counts, dtype=np.float64)
    _pair(r, c)
    n1, n2 = r.sum(), c.sum()
    if n1 == 0 or n2 == 0:
        return KSResult(float("nan"), float("nan"))
    d = float(np.max(np.abs(np.cumsum(r) / n1 - np.cumsum(c) / n2)))
    en = math.sqrt(n1 * n2 / (n1 + n2))
    return KSResult(d, kolmogorov_sf((en + 0.12 + 0.11 / en) * d))


class Chi2Result(NamedTuple):
    statistic: float
    dof: int
    pvalue: float


def chi2(ref_counts: ArrayLike, cur_counts: ArrayLike) -> Chi2Result:
    """Chi-square test of homogeneity on the 2 x k table of the two histograms."""
    r, c = _pair(ref_counts, cur_counts)
    n1, n2 = r.sum(), c.sum()
    if n1 == 0 or n2 == 0 or r.size < 2:
        return Chi2Result(0.0 if r.size < 2 and n1 and n2 else float("nan"), max(r.size - 1, 0), 1.0 if r.size < 2 and n1 and n2 else float("nan"))
    col = r + c
    e1, e2 = col * n1 / (n1 + n2), col * n2 / (n1 + n2)
    stat = float(np.sum((r - e1) ** 2 / e1) + np.sum((c - e2) ** 2 / e2))
    dof = int(r.size - 1)
    return Chi2Result(stat, dof, chi2_sf(stat, dof))


@dataclass(frozen=True)
class DriftPolicy:
    """When a histogram counts as drifted; see "Drift verdicts" in the module docstring."""

    psi_threshold: float = 0.1  # material effect: noise-corrected PSI above this
    alpha: float = 0.01         # significance of PSI against its no-drift distribution
    min_count: int = 200        # current rows below which there is no verdict
    eps: float = DEFAULT_EPS    # PSI pseudo-count per bin


@dataclass(frozen=True)
class DriftVerdict:
    verdict: str             # "drift" | "no_drift" | "insufficient_data"
    psi: float
    psi_null_mean: float     # E[PSI] with no drift at these n
    psi_excess: float        # psi - psi_null_mean: the effect size compared with the threshold
    psi_critical: float      # PSI needed for significance at alpha at these n
    pvalue: float            # of PSI under no drift
    n_ref: int
    n_cur: int
    bins: int

    def as_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def drift_decision(ref_counts: ArrayLike, cur_counts: ArrayLike, policy: DriftPolicy = DriftPolicy(), *, n_tests: int = 1) -> DriftVerdict:
    """Sample-size-aware verdict: material (PSI above noise + threshold) and significant.

    ``n_tests`` divides ``alpha`` (Bonferroni) when one window tests several fields at once.
    """
    r, c = _pair(ref_counts, cur_counts)
    n1, n2 = int(r.sum()), int(c.sum())
    k = int(r.size)
    if n2 < policy.min_count or n1 == 0:
        value = psi(r, c, policy.eps) if n1 and n2 else float("nan")
        return DriftVerdict("insufficient_data", value, float("nan"), float("nan"), float("nan"), float("nan"), n1, n2, k)
    if k < 2:  # one bin holds everything on both sides (a constant field): identical
        return DriftVerdict("no_drift", 0.0, 0.0, 0.0, float("nan"), 1.0, n1, n2, k)
    scale = 1.0 / n1 + 1.0 / n2
    value = psi(r, c, policy.eps)
    null = (k - 1) * scale
    alpha = policy.alpha / max(n_tests, 1)
    pvalue = chi2_sf(value / scale, k - 1)
    critical = chi2_isf(alpha, k - 1) * scale
    drifted = value - null > policy.psi_threshold and pvalue < alpha
    return DriftVerdict("drift" if drifted else "no_drift", value, null, value - null, critical, pvalue, n1, n2, k)


@dataclass
class AlertState:
    """Hysteresis over windows: fire after ``fire_after`` drifting windows in a row, clear after
    ``clear_after`` clean ones in a row. A window with no verdict (``None``) changes nothing."""

    fire_after: int = 3
    clear_after: int = 3
    active: bool = False
    drift_streak: int = 0
    clean_streak: int = 0

    def update(self, drifted: bool | None) -> str | None:
        """Feed one window's verdict; returns "fired", "cleared" or None."""
        if drifted is None:
            return None
        if drifted:
            self.drift_streak, self.clean_streak = self.drift_streak + 1, 0
            if not self.active and self.drift_streak >= self.fire_after:
                self.active = True
                return "fired"
        else:
            self.drift_streak, self.clean_streak = 0, self.clean_streak + 1
            if self.active and self.clean_streak >= self.clear_after:
                self.active = False
                return "cleared"
        return None


# ---------------------------------------------------------------- performance


def _curve(scores: ArrayLike, pos_w: np.ndarray, neg_w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative (positive, negative) weight at each distinct score, highest score first."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.shape != pos_w.shape or not np.all(np.isfinite(s)):
        raise ValueError("scores must be a finite 1-D array matching the labels")
    order = np.argsort(-s, kind="mergesort")
    s = s[order]
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]  # last row of each tie group
    return np.cumsum(pos_w[order])[last], np.cumsum(neg_w[order])[last]


def _auroc(tp: np.ndarray, fp: np.ndarray) -> float:
    if tp.size == 0 or tp[-1] <= 0 or fp[-1] <= 0:
        return float("nan")
    tpr = np.r_[0.0, tp / tp[-1]]
    fpr = np.r_[0.0, fp / fp[-1]]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def _ap(tp: np.ndarray, fp: np.ndarray) -> float:
    if tp.size == 0 or tp[-1] <= 0:
        return float("nan")
    precision = tp / (tp + fp)
    recall = tp / tp[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _labels(labels: ArrayLike) -> np.ndarray:
    y = np.asarray(labels)
    if y.dtype == bool:
        return y.astype(np.float64)
    y = y.astype(np.float64)
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 0/1 (1 = the positive class)")
    return y


def auroc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Realized AUROC (scikit-learn's roc_auc_score); NaN with a single class."""
    y = _labels(labels)
    return _auroc(*_curve(scores, y, 1.0 - y))


def average_precision(scores: ArrayLike, labels: ArrayLike) -> float:
    """Realized AP (scikit-learn's average_precision_score); NaN without a positive."""
    y = _labels(labels)
    return _ap(*_curve(scores, y, 1.0 - y))


PROBABILITY_SLACK = 1e-6  # float32 artifacts: 20 trees voting 0.05 each sum to 1.0000001 (ONNX random forests)


def _probabilities(scores: ArrayLike) -> np.ndarray:
    p = np.asarray(scores, dtype=np.float64)
    if p.ndim != 1 or not np.all((p >= -PROBABILITY_SLACK) & (p <= 1.0 + PROBABILITY_SLACK)):
        raise ValueError("CBPE needs probabilities in [0, 1]")
    return np.clip(p, 0.0, 1.0)


def estimated_auroc(scores: ArrayLike) -> float:
    """CBPE AUROC: the ROC of the expected confusion matrix (p positive, 1 - p negative per row)."""
    p = _probabilities(scores)
    return _auroc(*_curve(p, p, 1.0 - p))


def estimated_average_precision(scores: ArrayLike) -> float:
    """CBPE AP: expected precision sum(p)/count over expected recall sum(p)/sum(all p)."""
    p = _probabilities(scores)
    return _ap(*_curve(p, p, 1.0 - p))


def calibration_check(
    scores: ArrayLike, labels: ArrayLike, *, n_bins: int = 10, ece_tolerance: float = 0.05, alpha: float = 0.01,
) -> dict[str, Any]:
    """Reliability bins (equal-count), ECE and a Hosmer-Lemeshow test on labeled data.

    ``ECE = sum_b (n_b / n) |mean score_b - positive rate_b|``. Finite bins make ECE positive even
    for perfectly calibrated scores, so ``calibrated`` is False only when miscalibration is both
    material (``ece > ece_tolerance``) and significant (Hosmer-Lemeshow ``sum_b (O_b - E_b)^2 /
    (E_b (1 - E_b / n_b))`` against chi2 with ``n_bins`` dof, as on data the model never saw).
    """
    p = _probabilities(scores)
    y = _labels(labels)
    if p.shape != y.shape:
        raise ValueError("scores and labels differ in length")
    if p.size == 0:
        return {"n": 0, "bins": [], "ece": None, "hl_statistic": None, "hl_pvalue": None, "calibrated": None}
    order = np.argsort(p, kind="mergesort")
    groups = [g for g in np.array_split(order, min(n_bins, p.size)) if g.size]
    bins, ece, hl = [], 0.0, 0.0
    for g in groups:
        mean_p, rate, n_b = float(p[g].mean()), float(y[g].mean()), int(g.size)
        ece += n_b / p.size * abs(mean_p - rate)
        expected = mean_p * n_b
        if 0.0 < mean_p < 1.0:
            hl += (y[g].sum() - expected) ** 2 / (expected * (1.0 - mean_p))
        bins.append({"lo": float(p[g].min()), "hi": float(p[g].max()), "n": n_b, "mean_score": mean_p, "positive_rate": rate})
    hl_p = chi2_sf(hl, len(groups))
    return {
        "n": int(p.size), "bins": bins, "ece": ece, "hl_statistic": float(hl), "hl_pvalue": hl_p,
        "calibrated": not (ece > ece_tolerance and hl_p < alpha),
    }
