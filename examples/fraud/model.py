"""The fraud model of the founding article: a 20-tree random forest of depth 20, in a Pipeline.

``train_rf`` is also the trainer of ``edgefleet retrain --trainer examples.fraud.model:train_rf``:
it takes the retrain job's ``train_df`` (reference rows plus labeled telemetry, the input fields
and ``Class``) and returns the fitted pipeline.
"""

from __future__ import annotations

from typing import Any

from examples.fraud.data import FEATURES, LABEL

N_TREES = 20
MAX_DEPTH = 20


def make_pipeline(seed: int = 0) -> Any:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline

    # the companion's parameters: numTrees 20, maxDepth 20, gini; one job, the machine is shared
    return Pipeline([("rf", RandomForestClassifier(n_estimators=N_TREES, max_depth=MAX_DEPTH, criterion="gini",
                                                   random_state=seed, n_jobs=1))])


def train_rf(train_df: Any) -> Any:
    return make_pipeline().fit(train_df[FEATURES], train_df[LABEL].astype(int))
