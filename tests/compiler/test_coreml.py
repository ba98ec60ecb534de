"""CoreML tree ensembles, checked by the numpy evaluator of the emitted spec (Core ML cannot run on Linux).

Also runs the preprocessing variants (ordinal with unknown value, one-hot with drop, categorical
imputer, multi-class) through CoreML, TF.js and TFLite together, on rows with unseen and missing
categories: the cut folding and the input-side category handling are shared by all three.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from compiler import CompileError, compile
from compiler.targets.coreml import RUNTIME, evaluate
from compiler.targets.tfjs import run_tfjs
from compiler.targets.tflite import run_tflite
from edgefleet.datasets import CATEGORICAL, LABEL, NUMERIC
from edgefleet.encoding import encode_columns
from tests.compiler.test_variants import VARIANTS

TOL = 1e-5
TREES = ["dt", "rf", "et", "gb", "hgb"]


def _spec(data: bytes) -> Any:
    from coremltools.proto import Model_pb2

    spec = Model_pb2.Model()
    spec.ParseFromString(data)
    return spec


@pytest.mark.parametrize("family", TREES)
def test_coreml_trees_match_sklearn(family: str, train_model: Any, churn_data: dict[str, Any], fresh_data: Any, keypair: dict[str, Any]) -> None:
    model = train_model(family)
    result = compile(model, churn_data["holdout"], targets=["coreml"], name=f"churn-{family}", private_key=keypair["private"], label=LABEL)
    report = result.manifest["parity"][0]
    assert report["passed"] and report["max_abs_diff"] <= 1e-12 and report["runtime"] == RUNTIME, report
    art = result.manifest["artifacts"][0]
    spec = _spec(result.files[art["path"]])
    assert spec.WhichOneof("Type") == "treeEnsembleClassifier"
    features = encode_columns(result.manifest["input_schema"]["fields"], fresh_data)
    got = evaluate(spec, features)
    assert np.abs(got - model.predict_proba(fresh_data[CATEGORICAL + NUMERIC])).max() <= 1e-12


def test_coreml_says_what_it_cannot_take(train_model: Any, churn_data: dict[str, Any], keypair: dict[str, Any]) -> None:
    with pytest.raises(CompileError, match="target coreml cannot take model 'lr'.*tree ensembles only.*LogisticRegression"):
        compile(train_model("lr"), churn_data["holdout"], targets=["coreml"], name="lr", private_key=keypair["private"])


def _awkward_rows(fresh: pd.DataFrame) -> pd.DataFrame:
    frame = fresh.head(120).copy()
    for col in ("InternetService", "PaymentMethod"):
        frame[col] = frame[col].astype(object)
    frame.loc[0:19, "InternetService"] = "Satellite"  # never seen in training
    frame.loc[20:39, "PaymentMethod"] = None          # missing categorical
    frame.loc[40:59, "TotalCharges"] = np.nan         # missing numeric
    return frame


def _contract_rf() -> Pipeline:
    cats = [c for c in CATEGORICAL if c != "Contract"]
    return Pipeline([
        ("pre", ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), cats),
                                   ("num", Pipeline([("imp", SimpleImputer()), ("sc", StandardScaler())]), NUMERIC)])),
        ("clf", RandomForestClassifier(n_estimators=15, max_depth=8, random_state=0)),
    ])


@pytest.mark.parametrize("variant", ["ordinal+minmax+dt", "ohe-drop+maxabs+gb", "cat-imputer+passthrough+hgb", "multiclass-rf"])
def test_tree_variants_on_coreml_tfjs_tflite(variant: str, churn_data: dict[str, Any], fresh_data: pd.DataFrame, keypair: dict[str, Any]) -> None:
    train = churn_data["train"].copy()
    label, cols = (("Contract", [c for c in CATEGORICAL if c != "Contract"] + NUMERIC) if variant == "multiclass-rf"
                   else (LABEL, CATEGORICAL + NUMERIC))
    if variant.startswith("cat-imputer"):
        train.loc[np.random.default_rng(0).random(len(train)) < 0.05, "PaymentMethod"] = None
    model = (_contract_rf() if variant == "multiclass-rf" else VARIANTS[variant]()).fit(train[cols], train[label])
    result = compile(model, churn_data["holdout"], targets=["coreml", "tfjs", "tflite"], name="variant",
                     private_key=keypair["private"], label=label)
    assert all(r["passed"] for r in result.manifest["parity"]), result.manifest["parity"]
    frame = _awkward_rows(fresh_data)
    fields = result.manifest["input_schema"]["fields"]
    features = encode_columns(fields, frame)
    expected = model.predict_proba(frame[cols])
    arts = {a["format"]: result.files[a["path"]] for a in result.manifest["artifacts"]}
    n = expected.shape[1]
    for name, got in (("coreml", evaluate(_spec(arts["coreml"]), features)),
                      ("tfjs", run_tfjs(arts["tfjs"], features, n)),
                      ("tflite", np.asarray(run_tflite(arts["tflite"], features), dtype=np.float64))):
        assert np.abs(got - expected).max() <= TOL, f"{name}: max |dp| {np.abs(got - expected).max()}"
