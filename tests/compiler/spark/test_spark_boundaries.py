"""Rows exactly on every tree threshold and every categorical split: ONNX, TFLite and TF.js decide as Spark does.

The thresholds and categorical splits are read from Spark's own ``toDebugString`` (Scala prints
each double so that it parses back to the same double), independently of the frontend's
Parquet reader. For each continuous split ``feature <= t`` the test sets that field to ``t``
itself (Spark: left) and to the next double above (Spark: right) in many base rows; for each
one-hot split (``feature in {1.0}`` / ``{0.0}``) it sets the field to that category and to
every other one. Spark compares doubles with no float32 cast, so a lowering that rounded ``t``
or read ``in {1.0}`` as ``<= 1.0`` (onnxmltools' trap) would send these rows the other way.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

from edgefleet_cli.samples.telco_churn import CATEGORICAL, NUMERIC

SPLIT = re.compile(r"If \(feature (\d+) (<=|in) (\{[^}]*\}|[-0-9.Ee+]+)\)")


def splits(model: Any) -> tuple[list[tuple[str, float]], list[tuple[str, str, str]]]:
    """(numeric field, threshold) and (categorical field, category, "{1.0}"/"{0.0}") for every split of the classifier."""
    indexer, encoder = model.stages[0], model.stages[1]
    sizes = [s - 1 for s in encoder.categorySizes]  # dropLast
    onehot: list[tuple[str, str]] = []
    for name, labels, size in zip(CATEGORICAL, indexer.labelsArray, sizes):
        onehot += [(name, labels[k] if k < len(labels) else "<unseen>") for k in range(size)]
    numeric, categorical = set(), set()
    for j, op, value in SPLIT.findall(model.stages[-1].toDebugString):
        j = int(j)
        if op == "<=":
            assert j >= len(onehot), "a numeric threshold on a one-hot column"
            numeric.add((NUMERIC[j - len(onehot)], float(value)))
        else:
            field, category = onehot[j]
            categorical.add((field, category, value))
    return sorted(numeric), sorted(categorical)


def boundary_rows(model: Any, base: Any, per_split: int = 12) -> tuple[Any, list[tuple[int, int]]]:
    import pandas as pd

    numeric, categorical = splits(model)
    parts, pairs, n = [], [], 0
    for k, (field, t) in enumerate(numeric):
        rows = base.iloc[[(k * 7 + i) % len(base) for i in range(per_split)]].copy()
        above = rows.copy()
        rows[field], above[field] = t, float(np.nextafter(t, np.inf))
        parts += [rows, above]
        pairs.append((n, n + per_split))
        n += 2 * per_split
    for k, (field, category, _) in enumerate(categorical):
        rows = base.iloc[[(k * 5 + i) % len(base) for i in range(per_split)]].copy()
        others = [c for c in base[field].dropna().unique() if c != category] + ["never seen"]
        variants = [rows.assign(**{field: category if category != "<unseen>" else "never seen"})]
        variants += [rows.assign(**{field: c}) for c in others]
        parts += variants
        n += per_split * len(variants)
    frame = pd.concat(parts, ignore_index=True)
    return frame, pairs


def check_family(family: str, spark_pipeline: Any, spark_holdout: Any) -> dict[str, float]:
    from compiler import default_targets
    from compiler._compile import field_dicts
    from compiler.frontends.spark import SparkFrontend
    from edgefleet.encoding import encode_columns

    model = spark_pipeline(family)
    numeric, categorical = splits(model)
    assert numeric and categorical
    assert any(value == "{1.0}" for _, _, value in categorical)  # the trap: "category in {1.0} goes left"
    base = spark_holdout.dropna(subset=NUMERIC).head(120).reset_index(drop=True)
    frame, pairs = boundary_rows(model, base)
    ir = SparkFrontend().lower(model, spark_holdout)
    spark_p = ir.source_model("spark-pipeline").predict_proba(frame, ir.fields)
    assert not np.isnan(spark_p).any()
    # the rows sit on live decisions: at most thresholds, t and the next double above score differently in Spark
    live = sum(bool(np.any(spark_p[a:a + 12, 1] != spark_p[b:b + 12, 1])) for a, b in pairs)
    assert live >= 0.5 * len(pairs), (live, len(pairs))
    features = encode_columns(field_dicts(ir), frame)
    reg, worst = default_targets(), {}
    for name in ("onnx", "tflite", "tfjs"):
        target = reg.get(name)
        art = target.build(ir, {"name": f"bounds-{family}", "version": 1})
        got = target.score(art, ir, features, frame)
        diff = np.abs(got - spark_p)
        worst[name] = float(diff.max())
        assert worst[name] <= 1e-5, (name, worst[name], int(diff.max(axis=1).argmax()))
        assert np.array_equal(got[:, 1] > 0.5, spark_p[:, 1] > 0.5), name
    return worst


@pytest.mark.parametrize("family", ["rf", pytest.param("dt", marks=pytest.mark.slow), pytest.param("gbt", marks=pytest.mark.slow)])
def test_rows_on_every_threshold_and_categorical_split_decide_as_spark(family: str, spark_pipeline: Any, spark_holdout: Any) -> None:
    worst = check_family(family, spark_pipeline, spark_holdout)
    assert set(worst) == {"onnx", "tflite", "tfjs"}
