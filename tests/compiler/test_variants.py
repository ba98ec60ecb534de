"""Preprocessing variants, multi-class, unseen and missing categories: each scored by real runtimes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, OneHotEncoder, OrdinalEncoder, StandardScaler
from sklearn.tree import DecisionTreeClassifier

from compiler import compile
from compiler.targets.pmml import score_file
from edgefleet.bundle_format import open_bundle
from edgefleet.encoding import encode_columns
from edgefleet_cli.samples.telco_churn import CATEGORICAL, LABEL, NUMERIC

TOL = 1e-5


def _onnx_proba(result: Any, frame: pd.DataFrame) -> np.ndarray:
    import onnxruntime as ort

    art = next(a for a in result.manifest["artifacts"] if a["format"] == "onnx")
    sess = ort.InferenceSession(open_bundle(result.bundle_dir).artifact_bytes(art["path"]), providers=["CPUExecutionProvider"])
    feats = encode_columns(result.manifest["input_schema"]["fields"], frame)
    return np.asarray(sess.run(["probabilities"], {"features": feats})[0], dtype=np.float64)


def _pmml_proba(result: Any, frame: pd.DataFrame) -> np.ndarray:
    art = next(a for a in result.manifest["artifacts"] if a["format"] == "pmml")
    return score_file(str(result.bundle_dir / art["path"]), frame, result.manifest["output"]["classes"])


def _check(result: Any, model: Any, frame: pd.DataFrame, cols: list[str]) -> None:
    assert result.parity_passed, result.manifest["parity"]
    expected = model.predict_proba(frame[cols])
    for name, got in (("onnx", _onnx_proba(result, frame)), ("pmml", _pmml_proba(result, frame))):
        diff = np.abs(got - expected).max()
        assert diff <= TOL, f"{name}: max |dp| {diff}"


VARIANTS = {
    "ordinal+minmax+dt": lambda: Pipeline([
        ("pre", ColumnTransformer([
            ("cat", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), CATEGORICAL),
            ("num", Pipeline([("imp", SimpleImputer(strategy="mean")), ("mm", MinMaxScaler())]), NUMERIC),
        ])),
        ("clf", DecisionTreeClassifier(max_depth=10, random_state=0)),
    ]),
    "ohe-drop+maxabs+gb": lambda: Pipeline([
        ("pre", ColumnTransformer([
            ("cat", OneHotEncoder(handle_unknown="ignore", drop="if_binary"), CATEGORICAL),
            ("num", Pipeline([("imp", SimpleImputer(strategy="median")), ("ma", MaxAbsScaler())]), NUMERIC),
        ])),
        ("clf", GradientBoostingClassifier(n_estimators=60, random_state=0)),
    ]),
    "cat-imputer+passthrough+hgb": lambda: Pipeline([
        ("pre", ColumnTransformer([
            ("cat", Pipeline([("imp", SimpleImputer(strategy="most_frequent")), ("ohe", OneHotEncoder(handle_unknown="ignore"))]), CATEGORICAL),
            ("num", SimpleImputer(strategy="constant", fill_value=0.0), NUMERIC),
        ], remainder="drop")),
        ("clf", HistGradientBoostingClassifier(max_iter=60, random_state=0)),
    ]),
    "scaler-after-ct+lr": lambda: Pipeline([
        ("pre", ColumnTransformer([
            ("cat", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
            ("num", SimpleImputer(strategy="median"), NUMERIC),
        ])),
        ("sc", StandardScaler()),
        ("clf", LogisticRegression(max_iter=2000)),
    ]),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_preprocessing_variants(variant: str, churn_data: dict[str, Any], fresh_data: pd.DataFrame, keypair: dict[str, Any], tmp_path: Any) -> None:
    train = churn_data["train"].copy()
    if variant.startswith("cat-imputer"):
        rng = np.random.default_rng(0)
        for frame in (train,):
            frame.loc[rng.random(len(frame)) < 0.05, "PaymentMethod"] = None
    model = VARIANTS[variant]().fit(train[CATEGORICAL + NUMERIC], train[LABEL])
    result = compile(model, churn_data["holdout"], targets=["onnx", "pmml"], name="variant", private_key=keypair["private"], label=LABEL, out_dir=tmp_path / "b")
    _check(result, model, fresh_data, CATEGORICAL + NUMERIC)


def test_unseen_and_missing_categories_score_like_sklearn(train_model: Any, compiled: Any, fresh_data: pd.DataFrame) -> None:
    frame = fresh_data.head(40).copy()
    frame.loc[0:9, "InternetService"] = "Satellite"          # never seen in training
    frame.loc[10:19, "PaymentMethod"] = None                 # missing categorical -> unseen
    frame.loc[20:29, "TotalCharges"] = np.nan                # missing numeric -> imputed
    frame["InternetService"] = frame["InternetService"].astype(object)
    frame["PaymentMethod"] = frame["PaymentMethod"].astype(object)
    for family in ("lr", "rf", "hgb"):
        _check(compiled(family), train_model(family), frame, CATEGORICAL + NUMERIC)


def test_multiclass_where_cheap(churn_data: dict[str, Any], fresh_data: pd.DataFrame, keypair: dict[str, Any], tmp_path: Any) -> None:
    cats = [c for c in CATEGORICAL if c != "Contract"]
    cols = cats + NUMERIC
    train = churn_data["train"]
    for clf in (LogisticRegression(max_iter=3000), RandomForestClassifier(n_estimators=30, random_state=0)):
        model = Pipeline([
            ("pre", ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), cats),
                                       ("num", Pipeline([("imp", SimpleImputer()), ("sc", StandardScaler())]), NUMERIC)])),
            ("clf", clf),
        ]).fit(train[cols], train["Contract"])
        result = compile(model, churn_data["holdout"], targets=["onnx", "pmml"], name="contract", private_key=keypair["private"], label="Contract", out_dir=tmp_path / type(clf).__name__)
        assert result.manifest["task"] == "multiclass_classification"
        assert result.manifest["output"]["classes"] == ["Month-to-month", "One year", "Two year"]
        _check(result, model, fresh_data, cols)


def test_bare_estimator_on_numeric_columns(churn_data: dict[str, Any], fresh_data: pd.DataFrame, keypair: dict[str, Any], tmp_path: Any) -> None:
    train = churn_data["train"].dropna(subset=NUMERIC)
    model = RandomForestClassifier(n_estimators=20, random_state=0).fit(train[NUMERIC], train[LABEL])
    result = compile(model, churn_data["holdout"], targets=["onnx", "pmml"], name="bare", private_key=keypair["private"], label=LABEL, out_dir=tmp_path / "b")
    fields = result.manifest["input_schema"]["fields"]
    assert [f["name"] for f in fields] == NUMERIC and all(f["missing"] == "reject" for f in fields)
    _check(result, model, fresh_data.dropna(subset=NUMERIC), NUMERIC)
