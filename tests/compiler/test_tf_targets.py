"""TFLite for every scikit-learn family (our lowering) and for Keras, scored by ai-edge-litert.

Each check runs the real runtime: the compile's own parity gate, an independent re-score on
data the compiler never saw, and, for trees, inputs placed exactly on and next to every folded
cut, where a float32 shortcut would take the wrong branch. The ``tf`` extra is part of ``all``:
a missing TensorFlow fails these tests rather than skipping them.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

from compiler import compile
from compiler._compile import field_dicts
from compiler.lowering import LoweringError, lower
from compiler.lowering.exact import from_keys, keys
from compiler.targets.tflite import keras_tflite, run_tflite
from edgefleet.encoding import encode_columns
from edgefleet_cli.samples.telco_churn import CATEGORICAL, LABEL, NUMERIC
from tests.conftest import FAMILIES

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

TOL = 1e-5


def _tflite_proba(data: bytes, X: np.ndarray) -> np.ndarray:
    return np.asarray(run_tflite(data, X), dtype=np.float64)


def test_keys_preserve_double_order() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1e3, 2000), [-np.inf, np.inf, 0.0, -0.0, 5e-324, -5e-324, 1e308, -1e308]])
    k = keys(x)
    order = np.argsort(x, kind="stable")
    assert np.all(np.diff(k[order]) >= 0)
    assert keys(-0.0) == keys(0.0) == 0
    assert np.array_equal(from_keys(k)[x != 0], x[x != 0])


@pytest.mark.parametrize("family", FAMILIES)
def test_tflite_matches_sklearn(family: str, train_model: Any, churn_data: dict[str, Any], fresh_data: Any, keypair: dict[str, Any]) -> None:
    model = train_model(family)
    result = compile(model, churn_data["holdout"], targets=["tflite"], name=f"churn-{family}", private_key=keypair["private"],
                     label=LABEL)
    report = result.manifest["parity"][0]
    assert report["passed"] and report["max_abs_diff"] <= TOL and report["label_mismatches"] == 0, report
    art = result.manifest["artifacts"][0]
    assert art["inputs"][0]["dtype"] == "float64" and art["runtime"]["name"] == "ai-edge-litert"

    features = encode_columns(result.manifest["input_schema"]["fields"], fresh_data)
    got = _tflite_proba(result.files[art["path"]], features)
    expected = model.predict_proba(fresh_data[CATEGORICAL + NUMERIC])
    assert np.abs(got - expected).max() <= TOL


@pytest.mark.parametrize("family", ["dt", "rf", "gb", "hgb"])
def test_tree_decisions_exact_at_every_cut(family: str, train_model: Any, churn_data: dict[str, Any]) -> None:
    """Put each numeric field exactly on a folded cut and one double above it: sklearn's branch either way."""
    from compiler.frontends.sklearn import SklearnFrontend
    from compiler.targets.tflite import sklearn_tflite

    model = train_model(family)
    holdout = churn_data["holdout"]
    ir = SklearnFrontend().lower(model, holdout)
    head = lower(ir).head
    fields = field_dicts(ir)
    base = holdout.dropna(subset=NUMERIC).iloc[:1]
    rows = []
    rng = np.random.default_rng(1)
    inner = np.flatnonzero(head.left != np.arange(len(head.left)))
    for node in rng.choice(inner, size=min(400, len(inner)), replace=False):
        col = ir.columns[head.column[node]]
        if col.mode != "value" or abs(int(head.cut[node])) >= np.iinfo(np.int64).max - 1:
            continue
        name = ir.fields[col.field].name
        for k in (head.cut[node], head.cut[node] + 1):
            r = base.copy()
            r[name] = float(from_keys(np.array([k]))[0])
            rows.append(r)
    assert len(rows) > 50
    frame = __import__("pandas").concat(rows, ignore_index=True)
    got = _tflite_proba(sklearn_tflite(ir), encode_columns(fields, frame))
    expected = model.predict_proba(frame[CATEGORICAL + NUMERIC])
    assert np.abs(got - expected).max() <= TOL


def test_trees_refuse_imputer_after_scaler(churn_data: dict[str, Any]) -> None:
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    from compiler.frontends.sklearn import SklearnFrontend

    tr = churn_data["train"]
    pipe = Pipeline([("scale", StandardScaler()), ("impute", SimpleImputer()), ("clf", DecisionTreeClassifier(max_depth=3))])
    pipe.fit(tr[NUMERIC], tr[LABEL])
    with pytest.raises(LoweringError, match="DecisionTreeClassifier.*imputed after being scaled"):
        lower(SklearnFrontend().lower(pipe, tr), "tflite")


def test_keras_to_onnx_and_tflite(keras_model: Any, churn_data: dict[str, Any], fresh_data: Any, keypair: dict[str, Any]) -> None:
    result = compile(keras_model, churn_data["holdout"], targets=["onnx", "tflite"], name="churn-keras",
                     private_key=keypair["private"], label=LABEL)
    for rep in result.manifest["parity"]:
        assert rep["passed"] and rep["max_abs_diff"] <= TOL, rep
    tfl = next(a for a in result.manifest["artifacts"] if a["format"] == "tflite")
    assert tfl["inputs"][0]["dtype"] == "float32"
    fresh = fresh_data.dropna(subset=NUMERIC)
    got = _tflite_proba(result.files[tfl["path"]], fresh[NUMERIC].to_numpy(np.float32))[:, 0]
    assert np.abs(got - keras_model.predict_proba(fresh[NUMERIC])[:, 1]).max() <= TOL


def test_keras_float16_quantization_reports_its_delta(keras_model: Any, churn_data: dict[str, Any]) -> None:
    X = churn_data["holdout"].dropna(subset=NUMERIC)[NUMERIC].to_numpy(np.float32)
    ref = keras_model.predict_proba(X)[:, 1]
    from compiler.frontends.keras import KerasFrontend

    graph = KerasFrontend().lower(keras_model, churn_data["holdout"].dropna(subset=NUMERIC)).estimator
    full = keras_tflite(graph)
    half = keras_tflite(graph, quantize="float16")
    d_full = np.abs(_tflite_proba(full, X)[:, 0] - ref).max()
    d_half = np.abs(_tflite_proba(half, X)[:, 0] - ref).max()
    assert d_full <= TOL
    assert d_half < 1e-2  # float16 weights: a reported probability delta, not exact parity
