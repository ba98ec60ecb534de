"""Trainers for ``edgefleet retrain --trainer examples/churn_trainers.py:<function>``.

A trainer takes ``train_df`` (the input fields and the ``Churn`` label: reference data plus
labeled telemetry) and returns a fitted estimator. ``train_shuffled`` is the deliberately bad
challenger of the simulation: the same pipeline fitted on permuted labels, which compiles and
passes parity (parity checks the artifact against its own source model) but has learned nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_churn import make_pipeline  # noqa: E402

from edgefleet_cli.samples.telco_churn import CATEGORICAL, LABEL, NUMERIC  # noqa: E402


def train_lr(train_df: Any) -> Any:
    return make_pipeline("lr").fit(train_df[CATEGORICAL + NUMERIC], train_df[LABEL].astype(int))


def train_shuffled(train_df: Any) -> Any:
    y = train_df[LABEL].astype(int).sample(frac=1.0, random_state=0).to_numpy()
    return make_pipeline("lr").fit(train_df[CATEGORICAL + NUMERIC], y)
