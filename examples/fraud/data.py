"""Synthetic credit-card transactions with the Kaggle schema: ``Time, V1..V28, Amount, Class``.

The founding article's companion repository trains on Kaggle's ``creditcard.csv`` (two days,
492 frauds in 284,807 rows) and makes more "days" by multiplying every column of a copy by
``1 + uniform(-1, 1) * 0.1``, one factor per column and day: that is its whole drift mechanism.
The dataset cannot be fetched here, so this module generates rows of the same shape:

* legitimate rows: independent normals with the decreasing spread of PCA components (V1 widest,
  V28 narrowest), ``Amount`` log-normal (median about 22), ``Time`` in seconds since the start
  of day 1;
* frauds (``Class`` 1) at the realistic rate of 0.17 %: the means of V14, V17, V12, V10 (down)
  and V4, V11 (up) move by one to two spreads, scaled per row by an intensity drawn from
  [0.2, 1.3], so some frauds look like ordinary payments (separable, not trivially);
* every day after the first is multiplied by one factor in ``1 ± drift`` per column
  (``NOISE = 0.1``: the companion's mechanism);
* ``shift=True`` (days 5 and 6 of the example) is the stronger drift that makes the loop
  trigger: one step change of up to ±30 % per column (the same on every shifted day, the daily
  ±10 % on top), and 70 % of the frauds follow a new pattern (V3 and V16 down, V7 and V9 up)
  that a model trained on day 1 has never seen.

Everything is seeded: ``make_day(d, n, seed)`` returns the same rows every time.
"""

from __future__ import annotations

from typing import Any

import numpy as np

V = [f"V{i}" for i in range(1, 29)]
FEATURES = V + ["Amount"]            # the 29 model inputs, in the order CDSW callers send them
COLUMNS = ["Time"] + FEATURES + ["Class"]
LABEL = "Class"
FRAUD_RATE = 0.0017
NOISE = 0.1                          # the companion's drift: 1 ± up to 10 % per column and day
SHIFT_NOISE = 0.3                    # the stronger drift of the shifted days
SPREAD = {name: 2.0 * 0.93 ** i for i, name in enumerate(V)}  # PCA-like: V1 widest
PATTERN_A = {"V14": -5.0, "V17": -4.5, "V12": -4.0, "V10": -3.5, "V4": 3.0, "V11": 2.5}  # in spreads
PATTERN_B = {"V3": -4.5, "V16": -4.0, "V7": 3.5, "V9": 3.0}                            # the new fraud
NEW_PATTERN_SHARE = 0.7


def make_day(day: int, n: int, seed: int = 0, *, shift: bool = False, fraud_rate: float = FRAUD_RATE) -> Any:
    """Day ``day`` (1-based) of ``n`` transactions as a DataFrame with ``COLUMNS``, ordered by Time."""
    import pandas as pd

    if day < 1 or n < 1:
        raise ValueError(f"day must be >= 1 and n >= 1, got day={day}, n={n}")
    rng = np.random.default_rng([seed, day])
    fraud = rng.random(n) < fraud_rate
    k = int(fraud.sum())
    cols: dict[str, np.ndarray] = {}
    for name in V:
        cols[name] = rng.standard_normal(n) * SPREAD[name]
    intensity = rng.uniform(0.5, 1.3, k)
    new = rng.random(k) < (NEW_PATTERN_SHARE if shift else 0.0)
    for name, shift_by in PATTERN_A.items():
        col = cols[name]
        col[fraud] += np.where(new, 0.25, 1.0) * intensity * shift_by * SPREAD[name]
    for name, shift_by in PATTERN_B.items():
        col = cols[name]
        col[fraud] += np.where(new, 1.0, 0.0) * intensity * shift_by * SPREAD[name]
    amount = np.exp(rng.normal(3.1, 1.3, n))
    amount[fraud] = np.exp(rng.normal(3.6, 1.5, k))
    cols["Amount"] = amount
    step = np.random.default_rng([seed, 0]).uniform(-1.0, 1.0, len(FEATURES)) * SHIFT_NOISE  # one step, shared by shifted days
    if day > 1:
        for j, name in enumerate(FEATURES):
            cols[name] = cols[name] * (1.0 + rng.uniform(-1.0, 1.0) * NOISE) * (1.0 + step[j] if shift else 1.0)
    cols["Amount"] = np.round(np.abs(cols["Amount"]), 2)
    t = np.sort(rng.uniform(0.0, 86_400.0, n)) + (day - 1) * 86_400.0
    order = np.argsort(t, kind="stable")  # rows stay paired with their labels: t is already sorted
    df = pd.DataFrame({"Time": np.round(t, 0), **cols, LABEL: fraud.astype(np.int64)})
    return df.iloc[order].reset_index(drop=True)[COLUMNS]


def make_days(n: int, seed: int = 0, *, days: int = 6, shifted: tuple[int, ...] = (5, 6)) -> dict[int, Any]:
    """``{day: DataFrame}`` for days 1..``days``; the ``shifted`` days carry the stronger drift."""
    return {d: make_day(d, n, seed, shift=d in shifted) for d in range(1, days + 1)}
