"""CoreML tree ensembles and dense models, checked by numpy evaluators of the emitted spec (Core ML cannot run on Linux).

Also runs the preprocessing variants (ordinal with unknown value, one-hot with drop, categorical
imputer, multi-class) through CoreML, TF.js and TFLite together, on rows with unseen and missing
categories: the cut folding and the input-side category handling are shared by all three. The
dense variants (ordinal + MinMaxScaler + LogisticRegression, multi-class LR and MLP) do the same
for the float32 column path that LR, MLP and Keras share.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, OrdinalEncoder, StandardScaler

from compiler import CompileError, compile
from compiler.targets import coreml_nn
from compiler.targets.coreml import RUNTIME, evaluate
from compiler.targets.tfjs import run_tfjs
from compiler.targets.tflite import run_tflite
from edgefleet.encoding import encode_columns
from edgefleet_cli.samples.telco_churn import CATEGORICAL, LABEL, NUMERIC
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


@pytest.mark.parametrize("family", ["lr", "mlp"])
def test_coreml_dense_models_match_sklearn(family: str, train_model: Any, churn_data: dict[str, Any], fresh_data: Any, keypair: dict[str, Any]) -> None:
    model = train_model(family)
    result = compile(model, churn_data["holdout"], targets=["coreml"], name=f"churn-{family}", private_key=keypair["private"], label=LABEL)
    report = result.manifest["parity"][0]
    assert report["passed"] and report["max_abs_diff"] <= TOL and report["runtime"] == RUNTIME, report
    spec = _spec(result.files[result.manifest["artifacts"][0]["path"]])
    assert spec.WhichOneof("Type") == "neuralNetworkClassifier" and spec.specificationVersion == 4
    assert spec.description.input[0].name == "features" and spec.description.predictedProbabilitiesName == "probabilities"
    frame = _awkward_rows(fresh_data)
    got = coreml_nn.evaluate(spec, encode_columns(result.manifest["input_schema"]["fields"], frame))
    assert np.abs(got - model.predict_proba(frame[CATEGORICAL + NUMERIC])).max() <= TOL


def test_coreml_keras_mlp(keras_model: Any, churn_data: dict[str, Any], fresh_data: Any, keypair: dict[str, Any]) -> None:
    result = compile(keras_model, churn_data["holdout"], targets=["coreml"], name="churn-keras", private_key=keypair["private"], label=LABEL)
    report = result.manifest["parity"][0]
    assert report["passed"] and report["max_abs_diff"] <= TOL, report
    fresh = fresh_data.dropna(subset=NUMERIC)
    got = coreml_nn.evaluate(_spec(result.files["artifacts/model.mlmodel"]), fresh[NUMERIC].to_numpy(np.float64))
    assert np.abs(got - keras_model.predict_proba(fresh[NUMERIC])).max() <= TOL


def test_coreml_says_what_it_cannot_take(churn_data: dict[str, Any], keypair: dict[str, Any]) -> None:
    import keras

    from compiler.frontends.keras import KerasModel

    logits = KerasModel(keras.Sequential([keras.Input((len(NUMERIC),)), keras.layers.Dense(2)]), NUMERIC, classes=[0, 1])
    with pytest.raises(CompileError, match="target coreml cannot take model 'logits'.*does not end in a sigmoid or softmax"):
        compile(logits, churn_data["holdout"], targets=["coreml"], name="logits", private_key=keypair["private"])


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


DENSE_VARIANTS = {
    "ordinal+minmax+lr": (LABEL, lambda cats: Pipeline([
        ("pre", ColumnTransformer([
            ("cat", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), cats),
            ("num", Pipeline([("imp", SimpleImputer(strategy="mean")), ("mm", MinMaxScaler())]), NUMERIC)])),
        ("clf", LogisticRegression(max_iter=2000))])),
    "multiclass-ordinal+minmax+lr": ("Contract", lambda cats: Pipeline([
        ("pre", ColumnTransformer([
            ("cat", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), cats),
            ("num", Pipeline([("imp", SimpleImputer(strategy="median")), ("mm", MinMaxScaler())]), NUMERIC)])),
        ("clf", LogisticRegression(max_iter=3000))])),
    "multiclass-mlp": ("Contract", lambda cats: Pipeline([
        ("pre", ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), cats),
                                   ("num", Pipeline([("imp", SimpleImputer()), ("sc", StandardScaler())]), NUMERIC)])),
        ("clf", MLPClassifier(hidden_layer_sizes=(16,), max_iter=300, random_state=0))])),
}


@pytest.mark.parametrize("variant", sorted(DENSE_VARIANTS))
def test_dense_variants_on_coreml_tfjs_tflite(variant: str, churn_data: dict[str, Any], fresh_data: pd.DataFrame, keypair: dict[str, Any]) -> None:
    import warnings

    label, make = DENSE_VARIANTS[variant]
    cats = [c for c in CATEGORICAL if c != label]
    cols = cats + NUMERIC
    train = churn_data["train"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: parity does not need a converged model
        model = make(cats).fit(train[cols], train[label])
    result = compile(model, churn_data["holdout"], targets=["coreml", "tfjs", "tflite"], name="variant",
                     private_key=keypair["private"], label=label)
    assert all(r["passed"] for r in result.manifest["parity"]), result.manifest["parity"]
    frame = _awkward_rows(fresh_data)
    features = encode_columns(result.manifest["input_schema"]["fields"], frame)
    expected = model.predict_proba(frame[cols])
    arts = {a["format"]: result.files[a["path"]] for a in result.manifest["artifacts"]}
    for name, got in (("coreml", coreml_nn.evaluate(_spec(arts["coreml"]), features)),
                      ("tfjs", run_tfjs(arts["tfjs"], features, expected.shape[1])),
                      ("tflite", np.asarray(run_tflite(arts["tflite"], features), dtype=np.float64))):
        assert np.abs(got - expected).max() <= TOL, f"{name}: max |dp| {np.abs(got - expected).max()}"
