"""The parity gate: an artifact's real runtime against the source model's predict_proba.

A row's labels must agree unless the reference positive-class probability lies within
``tie_margin`` of the threshold (multi-class: the top two probabilities are that close). A
100-tree forest produced exact 0.5 ties on 10 of 2,000 rows here; those are reported as
``tie_rows`` and not counted as disagreements, because either label is right.
"""

from __future__ import annotations

from typing import Any

import numpy as np

TIE_MARGIN = 1e-6


def compare(
    reference: np.ndarray, candidate: np.ndarray, *, tolerance: float, threshold: float = 0.5,
    tie_margin: float = TIE_MARGIN,
) -> dict[str, Any]:
    if candidate.shape != reference.shape:
        return {
            "rows": int(reference.shape[0]), "max_abs_diff": None, "passed": False, "tolerance": tolerance,
            "error": f"runtime returned shape {list(candidate.shape)}, expected {list(reference.shape)}",
        }
    diff = np.abs(candidate - reference)
    finite = bool(np.all(np.isfinite(candidate)))
    max_diff = float(diff.max()) if diff.size else 0.0
    if reference.shape[1] == 2:
        ref_label = reference[:, 1] > threshold
        cand_label = candidate[:, 1] > threshold
        ties = np.abs(reference[:, 1] - threshold) <= tie_margin
    else:
        ref_label = reference.argmax(axis=1)
        cand_label = candidate.argmax(axis=1)
        top2 = np.sort(reference, axis=1)[:, -2:]
        ties = (top2[:, 1] - top2[:, 0]) <= tie_margin
    compared = ~ties
    mismatches = int(np.sum(ref_label[compared] != cand_label[compared]))
    n_compared = int(compared.sum())
    passed = finite and max_diff <= tolerance and mismatches == 0
    return {
        "rows": int(reference.shape[0]),
        "max_abs_diff": max_diff if finite else None,
        "mean_abs_diff": float(diff.mean()) if diff.size and finite else None,
        "label_agreement": (n_compared - mismatches) / n_compared if n_compared else 1.0,
        "label_mismatches": mismatches,
        "tie_rows": int(ties.sum()),
        "tolerance": tolerance,
        "passed": passed,
        **({} if finite else {"error": "runtime returned NaN or infinite probabilities"}),
    }
