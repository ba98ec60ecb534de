"""The parity gate: an artifact's real runtime against the source model's predict_proba.

A row's labels must agree unless the reference positive-class probability lies within
``tie_margin`` of the threshold (multi-class: the top two probabilities are that close). A
100-tree forest produced exact 0.5 ties on 10 of 2,000 rows here; those are reported as
``tie_rows`` and not counted as disagreements, because either label is right.

A quantized artifact (``compiler.targets.tflite``) is gated on its own, looser tolerance, and
``label_margin`` is that tolerance: a label may flip only on a row whose reference probability
lies within it of the threshold (which any flip within the probability tolerance does). The
record still counts every flip in ``label_mismatches``/``label_agreement``, and
``quantization_delta`` adds the deltas against the unquantized artifact.
"""

from __future__ import annotations

from typing import Any

import numpy as np

TIE_MARGIN = 1e-6


def compare(
    reference: np.ndarray, candidate: np.ndarray, *, tolerance: float, threshold: float = 0.5,
    tie_margin: float = TIE_MARGIN, label_margin: float | None = None,
) -> dict[str, Any]:
    if candidate.shape != reference.shape:
        return {
            "rows": int(reference.shape[0]), "max_abs_diff": None, "passed": False, "tolerance": tolerance,
            "error": f"runtime returned shape {list(candidate.shape)}, expected {list(reference.shape)}",
        }
    diff = np.abs(candidate - reference)
    finite = bool(np.all(np.isfinite(candidate)))
    max_diff = float(diff.max()) if diff.size else 0.0
    margin = _margin(reference, threshold)
    ties = margin <= tie_margin
    compared = ~ties
    flipped = _labels(reference, threshold) != _labels(candidate, threshold)
    mismatches = int(np.sum(flipped[compared]))
    n_compared = int(compared.sum())
    gated = mismatches if label_margin is None else int(np.sum(flipped & (margin > label_margin)))
    passed = finite and max_diff <= tolerance and gated == 0
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


def _labels(proba: np.ndarray, threshold: float) -> np.ndarray:
    return proba[:, 1] > threshold if proba.shape[1] == 2 else proba.argmax(axis=1)


def _margin(reference: np.ndarray, threshold: float) -> np.ndarray:
    """How far each row's reference is from a label change: |p - threshold|, or the top-two gap."""
    if reference.shape[1] == 2:
        return np.abs(reference[:, 1] - threshold)
    top2 = np.sort(reference, axis=1)[:, -2:]
    margin: np.ndarray = top2[:, 1] - top2[:, 0]
    return margin


def quantization_delta(
    mode: str, reference: np.ndarray, quantized: np.ndarray, unquantized: np.ndarray, *,
    size: int, unquantized_size: int, threshold: float = 0.5,
) -> dict[str, Any]:
    """What quantizing cost: size, and probability and label deltas against the unquantized artifact.

    ``label_agreement``: fraction of rows where the quantized and unquantized artifacts give the
    same label; ``label_agreement_delta``: the quantized artifact's agreement with the source
    model minus the unquantized one's (0 = no labels lost; -0.004 = 0.4% of rows flipped).
    """
    d = np.abs(quantized - unquantized)
    ref = _labels(reference, threshold)
    q, u = _labels(quantized, threshold), _labels(unquantized, threshold)
    return {
        "mode": mode,
        "size": size,
        "unquantized_size": unquantized_size,
        "vs_unquantized": {
            "max_abs_diff": float(d.max()) if d.size else 0.0,
            "mean_abs_diff": float(d.mean()) if d.size else 0.0,
            "label_agreement": float(np.mean(q == u)) if len(q) else 1.0,
        },
        "unquantized_max_abs_diff": float(np.abs(unquantized - reference).max()) if d.size else 0.0,
        "label_agreement_delta": float(np.mean(q == ref) - np.mean(u == ref)) if len(q) else 0.0,
    }
