"""TF.js for every scikit-learn family and for Keras, scored by Node + @tensorflow/tfjs (cpu backend).

As for TFLite: the compile's own parity gate, an independent re-score of data the compiler never
saw, and, for trees, inputs placed exactly on and one double above every folded cut, which only
an exact float32x3 comparison gets right. Node and ``npm ci`` are part of ``make install``: a
missing runtime fails these tests rather than skipping them.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest

from compiler import TargetUnavailableError, compile
from compiler._compile import field_dicts
from compiler.lowering import lower
from compiler.lowering.exact import from_keys
from compiler.lowering.tfgraph import split3, split3_exact
from compiler.targets.tfjs import TfjsTarget, graph_model, run_tfjs, sklearn_function
from edgefleet.encoding import encode_columns
from edgefleet_cli.samples.telco_churn import CATEGORICAL, LABEL, NUMERIC
from tests.conftest import FAMILIES

TOL = 1e-5


def test_split3_adds_back_exactly_and_keeps_double_order() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1e4, 3000), rng.normal(0, 1e-20, 300), rng.integers(-5, 100, 200).astype(float),
                        [0.0, -0.0, 2.0**-97, -(2.0**-97), 3.4e38, -3.4e38, np.inf, -np.inf, 1e300, -1e300]])
    x = np.concatenate([x, np.nextafter(x, np.inf), np.nextafter(x, -np.inf)])
    p = split3(x)
    exact_range = (x == 0) | ((np.abs(x) >= 2.0**-97) & (np.abs(x) < 2.0**128))
    assert split3_exact(x[exact_range]).all()
    assert not split3_exact(np.array([5e-324, 2.0**-98 + 2.0**-150])).any()  # below the range: documented as inexact
    assert p.dtype == np.float32 and np.all(p[np.abs(x) >= 2.0**128, 1:] == 0)
    # lexicographic order of the parts == order of the doubles (np.lexsort keys: last is primary)
    assert np.array_equal(p[np.abs(x) >= 2.0**128, 0], np.sign(x[np.abs(x) >= 2.0**128]) * np.inf)  # beyond every finite cut
    x, p = x[exact_range], p[exact_range]
    order = np.lexsort((p[:, 2], p[:, 1], p[:, 0]))
    assert np.all(np.diff(x[order]) >= 0)


@pytest.mark.parametrize("family", FAMILIES)
def test_tfjs_matches_sklearn(family: str, train_model: Any, churn_data: dict[str, Any], fresh_data: Any, keypair: dict[str, Any]) -> None:
    model = train_model(family)
    result = compile(model, churn_data["holdout"], targets=["tfjs"], name=f"churn-{family}", private_key=keypair["private"], label=LABEL)
    report = result.manifest["parity"][0]
    assert report["passed"] and report["max_abs_diff"] <= TOL and report["label_mismatches"] == 0, report
    assert report["runtime"] == "@tensorflow/tfjs" and report["runtime_version"] == "4.22.0"
    art = result.manifest["artifacts"][0]
    assert art["path"] == "artifacts/model.tfjs.json" and art["inputs"][0]["shape"] == [None, len(result.manifest["input_schema"]["fields"]), 3]
    doc = json.loads(result.files[art["path"]])
    assert doc["format"] == "graph-model" and isinstance(doc["weightData"], str)

    features = encode_columns(result.manifest["input_schema"]["fields"], fresh_data)
    got = run_tfjs(result.files[art["path"]], features, 2)
    assert np.abs(got - model.predict_proba(fresh_data[CATEGORICAL + NUMERIC])).max() <= TOL


@pytest.mark.parametrize("family", ["rf", "hgb"])
def test_tfjs_tree_decisions_exact_at_every_cut(family: str, train_model: Any, churn_data: dict[str, Any]) -> None:
    from compiler.frontends.sklearn import SklearnFrontend

    model = train_model(family)
    holdout = churn_data["holdout"]
    ir = SklearnFrontend().lower(model, holdout)
    head = lower(ir, "tfjs").head
    base = holdout.dropna(subset=NUMERIC).iloc[:1]
    rows = []
    inner = np.flatnonzero(head.left != np.arange(len(head.left)))
    for node in np.random.default_rng(1).choice(inner, size=min(400, len(inner)), replace=False):
        col = ir.columns[head.column[node]]
        if col.mode != "value" or abs(int(head.cut[node])) >= np.iinfo(np.int64).max - 1:
            continue
        for k in (head.cut[node], head.cut[node] + 1):
            r = base.copy()
            r[ir.fields[col.field].name] = float(from_keys(np.array([k]))[0])
            rows.append(r)
    assert len(rows) > 50
    frame = pd.concat(rows, ignore_index=True)
    got = run_tfjs(graph_model(sklearn_function(ir), {}), encode_columns(field_dicts(ir), frame), 2)
    assert np.abs(got - model.predict_proba(frame[CATEGORICAL + NUMERIC])).max() <= TOL


def test_keras_to_tfjs(keras_model: Any, churn_data: dict[str, Any], fresh_data: Any, keypair: dict[str, Any]) -> None:
    result = compile(keras_model, churn_data["holdout"], targets=["tfjs"], name="churn-keras", private_key=keypair["private"], label=LABEL)
    report = result.manifest["parity"][0]
    assert report["passed"] and report["max_abs_diff"] <= TOL, report
    fresh = fresh_data.dropna(subset=NUMERIC)
    got = run_tfjs(result.files["artifacts/model.tfjs.json"], fresh[NUMERIC].to_numpy(np.float64), 2)
    assert np.abs(got - keras_model.predict_proba(fresh[NUMERIC])).max() <= TOL


def test_missing_node_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(TargetUnavailableError, match="Node.js"):
        TfjsTarget().check_available()
