"""Reference statistics and canary rows, computed once from the compile sample.

Bins are fixed here and reused by device sketches and drift monitoring, so PSI compares like
with like. For a numeric field with ``edges = [e1, ..., ek]`` there are k+1 bins, by the one
binning rule ``edgefleet.protocol.bin_index`` (vectorised here as ``numpy.searchsorted(...,
side="right")``, which tests/edgefleet/test_binning.py proves agrees with it). Edges are the distinct deciles of the sample; a field with at most 12
distinct values gets one bin per value (edges at the midpoints). Missing values are counted
apart. Categorical fields count each known category plus ``unseen`` and ``missing``. The
score histogram uses the same rule on the positive-class probability.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from compiler.ir import ModelIR

MAX_EXACT_VALUES = 12
N_QUANTILES = 10


def numeric_edges(values: np.ndarray) -> list[float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return []
    distinct = np.unique(finite)
    if distinct.size <= MAX_EXACT_VALUES:
        return [float(v) for v in (distinct[:-1] + distinct[1:]) / 2.0]
    qs = np.quantile(finite, np.linspace(0, 1, N_QUANTILES + 1)[1:-1])
    edges = np.unique(qs)
    return [float(e) for e in edges if e > distinct[0]]


def bin_counts(values: np.ndarray, edges: Sequence[float]) -> tuple[list[int], int]:
    finite = np.isfinite(values)
    idx = np.searchsorted(np.asarray(edges, dtype=np.float64), values[finite], side="right")
    counts = np.bincount(idx, minlength=len(edges) + 1)
    return [int(c) for c in counts], int((~finite).sum())


def field_stats(ir: "ModelIR", features: np.ndarray, frame: "pd.DataFrame") -> dict[str, Any]:
    """Per-field histograms from the encoded sample (categoricals are indices there).

    A missing categorical is counted as ``missing`` and not in the bin its policy maps it to.
    """
    out: dict[str, Any] = {}
    for j, f in enumerate(ir.fields):
        col = features[:, j]
        if f.type == "categorical":
            is_missing = frame[f.name].isna().to_numpy()
            idx = col.astype(np.int64)[~is_missing]
            known = np.bincount(idx[idx >= 0], minlength=len(f.categories))
            out[f.name] = {
                "type": "categorical",
                "categories": list(f.categories),
                "counts": [int(c) for c in known],
                "unseen": int((idx < 0).sum()),
                "missing": int(is_missing.sum()),
            }
        else:
            edges = numeric_edges(col)
            counts, missing = bin_counts(col, edges)
            finite = col[np.isfinite(col)]
            out[f.name] = {
                "type": f.type,
                "edges": edges,
                "counts": counts,
                "missing": missing,
                "mean": float(finite.mean()) if finite.size else None,
                "std": float(finite.std()) if finite.size else None,
            }
    return out


def score_stats(scores: np.ndarray) -> dict[str, Any]:
    edges = numeric_edges(scores)
    counts, _ = bin_counts(scores, edges)
    return {"edges": edges, "counts": counts, "mean": float(scores.mean()) if scores.size else None}


def metrics(y_true: np.ndarray | None, scores: np.ndarray) -> dict[str, Any]:
    out: dict[str, Any] = {"rows": int(scores.size)}
    if y_true is None:
        return out
    from sklearn.metrics import average_precision_score, roc_auc_score

    out["positive_rate"] = float(np.mean(y_true))
    if np.unique(y_true).size == 2:
        out["auroc"] = float(roc_auc_score(y_true, scores))
        out["average_precision"] = float(average_precision_score(y_true, scores))
    return out


def json_value(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def canary_rows(
    frame: "pd.DataFrame", field_names: list[str], proba: np.ndarray, classes: Sequence[Any],
    threshold: float, n: int = 8,
) -> list[dict[str, Any]]:
    """Rows spread over the score range, away from the decision threshold, one with a missing value."""
    binary = proba.shape[1] == 2
    score = proba[:, 1] if binary else proba.max(axis=1)
    safe = np.abs(score - threshold) > 1e-3 if binary else np.ones(len(score), dtype=bool)
    order = np.argsort(score, kind="stable")
    order = order[safe[order]]
    if order.size == 0:
        return []
    picks = list(dict.fromkeys(int(order[int(round(q * (order.size - 1)))]) for q in np.linspace(0, 1, n)))
    has_missing = frame[field_names].isna().any(axis=1).to_numpy()
    missing_rows = [int(i) for i in order if has_missing[i]]
    if missing_rows and not any(has_missing[i] for i in picks):
        picks[len(picks) // 2] = missing_rows[len(missing_rows) // 2]
    rows = []
    for i in picks:
        rec = {name: json_value(frame[name].iloc[i]) for name in field_names}
        label = classes[int(np.argmax(proba[i]))]
        rows.append({"input": rec, "probabilities": [float(p) for p in proba[i]], "label": json_value(label)})
    return rows
