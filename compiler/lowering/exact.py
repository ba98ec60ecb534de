"""Exact tree decisions on raw double inputs, folded from the IR's layers (numpy only).

A tree node of a float32 family (DecisionTree, RandomForest, ExtraTrees, GradientBoosting)
asks ``float64(float32(L(u))) <= t``; a HistGradientBoosting node asks ``L(u) <= t``. Here
``u`` is the column's raw value (the encoded field value, the one-hot 0/1 or the ordinal code)
and ``L`` the column's layers replayed in IEEE double. Every ``L`` we lower is monotone
(subtract, add, multiply or divide by a constant; rounding is monotone), so the set of ``u``
going left is a prefix (or, for a negative factor, a suffix) of the doubles. We find its last
double ``c`` by a vectorised binary search over order-preserving int64 keys and the device then
asks ``key(u) <= key(c)``: an integer comparison that is exact on any runtime with int64, and
that reproduces sklearn's decision for every double input, not only the sample's.

``key`` maps a double's bits to an int64 whose signed order is the doubles' order (-0.0 and
+0.0 share key 0). NaN never reaches a key: imputed columns substitute the fill value first.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from compiler.ir import Layer

INT64_MIN = np.iinfo(np.int64).min
INT64_MAX = np.iinfo(np.int64).max
NEVER = INT64_MIN  # no non-NaN key is <= INT64_MIN: the node never goes left
ALWAYS = INT64_MAX


def keys(x: np.ndarray | float) -> np.ndarray:
    """Order-preserving int64 keys of doubles (NaN excluded)."""
    b = np.ascontiguousarray(x, dtype=np.float64).view(np.int64)
    return np.where(b < 0, INT64_MIN - b, b)


def from_keys(k: np.ndarray) -> np.ndarray:
    k = np.asarray(k, dtype=np.int64)
    b = np.where(k < 0, INT64_MIN - k, k)
    return np.ascontiguousarray(b).view(np.float64)


def apply_layers(u: np.ndarray, cols: np.ndarray, layers: Sequence[Layer]) -> np.ndarray:
    """Replay the layers in double on values ``u`` of columns ``cols`` (elementwise, like sklearn)."""
    x = np.array(u, dtype=np.float64)
    for layer in layers:
        v = np.asarray(layer.values, dtype=np.float64)[cols]
        if layer.op == "fillnan":
            x = np.where(np.isnan(x) & ~np.isnan(v), v, x)
        elif layer.op == "sub":
            x = x - v
        elif layer.op == "add":
            x = x + v
        elif layer.op == "mul":
            x = x * v
        else:
            x = x / v
    return x


def decreasing_columns(layers: Sequence[Layer], n_columns: int) -> np.ndarray:
    """Columns whose layers compose to a non-increasing function (an odd number of negative factors)."""
    neg = np.zeros(n_columns, dtype=bool)
    for layer in layers:
        if layer.op in ("mul", "div"):
            neg ^= np.asarray(layer.values, dtype=np.float64) < 0
    return neg


def fold_thresholds(
    cols: np.ndarray, thresholds: np.ndarray, layers: Sequence[Layer], float32: bool, decreasing: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per node: the int64 key cut ``c`` and whether its children must be swapped.

    After folding, a node goes to its (possibly swapped) left child iff ``key(u) <= c``.
    """
    cols = np.asarray(cols, dtype=np.int64)
    t = np.asarray(thresholds, dtype=np.float64)
    swap = np.asarray(decreasing, dtype=bool)[cols]

    def goes_left(k: np.ndarray) -> np.ndarray:
        z = apply_layers(from_keys(k), cols, layers)
        if float32:
            with np.errstate(over="ignore"):
                z = z.astype(np.float32).astype(np.float64)
        left = z <= t
        return np.where(swap, ~left, left)  # swapped nodes: the prefix is where the original goes right

    lo = np.full(len(t), keys(-np.inf), dtype=np.int64)
    hi = np.full(len(t), keys(np.inf), dtype=np.int64)
    at_lo, at_hi = goes_left(lo), goes_left(hi)
    # invariant for the rest: goes_left(lo) and not goes_left(hi)
    for _ in range(70):
        active = hi - 1 > lo  # hi - lo would overflow int64
        if not active.any():
            break
        mid = lo // 2 + hi // 2 + ((lo % 2) + (hi % 2)) // 2
        ok = goes_left(mid)
        lo = np.where(active & ok, mid, lo)
        hi = np.where(active & ~ok, mid, hi)
    cut = np.where(at_hi, ALWAYS, np.where(at_lo, lo, NEVER))
    return cut.astype(np.int64), swap


def column_fill(layers: Sequence[Layer], n_columns: int) -> tuple[np.ndarray, list[int]]:
    """Per column, the raw value a NaN becomes (NaN: none) and columns where that is not exact.

    A NaN input is replaced by the first fillnan layer's value when no arithmetic layer touches
    the column before it; otherwise the fill happens in scaled space and has no raw equivalent.
    """
    fill = np.full(n_columns, np.nan)
    touched = np.zeros(n_columns, dtype=bool)
    bad: list[int] = []
    identity = {"sub": 0.0, "add": 0.0, "mul": 1.0, "div": 1.0}
    for layer in layers:
        v = np.asarray(layer.values, dtype=np.float64)
        if layer.op == "fillnan":
            new = ~np.isnan(v) & np.isnan(fill)
            bad.extend(int(j) for j in np.flatnonzero(new & touched))
            fill = np.where(new & ~touched, v, fill)
        else:
            touched |= v != identity[layer.op]
    return fill, sorted(set(bad))
