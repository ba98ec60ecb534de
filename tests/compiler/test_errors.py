"""Bad input to the compiler gets a clear error naming what is wrong, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from compiler import CompileError, ParityError, UnsupportedStepError, compile
from edgefleet_cli.samples.telco_churn import CATEGORICAL, LABEL, NUMERIC


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgefleet_cli.main", *args], capture_output=True, text=True, timeout=300)


def test_unsupported_step_names_class_position_and_targets(churn_data: dict[str, Any], keypair: dict[str, Any]) -> None:
    from sklearn.linear_model import LogisticRegression

    tr = churn_data["train"].dropna()
    model = Pipeline([
        ("pre", ColumnTransformer([
            ("cat", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
            ("num", Pipeline([("log", FunctionTransformer(np.log1p)), ("sc", StandardScaler())]), NUMERIC),
        ])),
        ("clf", LogisticRegression(max_iter=500)),
    ]).fit(tr[CATEGORICAL + NUMERIC], tr[LABEL])
    with pytest.raises(UnsupportedStepError) as info:
        compile(model, churn_data["holdout"], targets=["onnx"], private_key=keypair["private"])
    msg = str(info.value)
    assert "FunctionTransformer" in msg and "step pre/num/log" in msg
    assert "no edgefleet target supports it yet" in msg


def test_unsupported_final_estimator(churn_data: dict[str, Any], keypair: dict[str, Any]) -> None:
    from sklearn.neighbors import KNeighborsClassifier

    tr = churn_data["train"].dropna()
    model = Pipeline([("pre", ColumnTransformer([("num", StandardScaler(), NUMERIC)])), ("knn", KNeighborsClassifier())])
    model.fit(tr[NUMERIC], tr[LABEL])
    with pytest.raises(UnsupportedStepError, match=r"step knn \(KNeighborsClassifier\): final estimator KNeighborsClassifier"):
        compile(model, churn_data["holdout"], targets=["onnx"], private_key=keypair["private"])


def test_sample_missing_a_column(train_model: Any, churn_data: dict[str, Any], keypair: dict[str, Any]) -> None:
    sample = churn_data["holdout"].drop(columns=["tenure"])
    with pytest.raises(CompileError, match="sample is missing column.*tenure"):
        compile(train_model("lr"), sample, targets=["onnx"], private_key=keypair["private"])


def test_wrong_label_column(train_model: Any, churn_data: dict[str, Any], keypair: dict[str, Any]) -> None:
    with pytest.raises(CompileError, match="label column 'Churned' is not in the sample"):
        compile(train_model("lr"), churn_data["holdout"], targets=["onnx"], label="Churned", private_key=keypair["private"])
    with pytest.raises(CompileError, match="label column 'Contract' holds values the model does not know"):
        compile(train_model("lr"), churn_data["holdout"], targets=["onnx"], label="Contract", private_key=keypair["private"])


@pytest.mark.parametrize("name, version, match", [("Churn", 1, "name must be"), ("../x", 1, "name must be"), ("churn", 2**31, "version must be"),
                                                  ("churn", True, "version must be")])
def test_bad_name_or_version_is_refused_before_parity(train_model: Any, churn_data: dict[str, Any], keypair: dict[str, Any],
                                                      name: str, version: Any, match: str) -> None:
    with pytest.raises(CompileError, match=match):
        compile(train_model("lr"), churn_data["holdout"], targets=["onnx"], name=name, version=version, private_key=keypair["private"])


def test_unknown_target(train_model: Any, churn_data: dict[str, Any], keypair: dict[str, Any]) -> None:
    with pytest.raises(CompileError, match="unknown target 'onxx'; known targets: coreml, onnx, pickle, pmml, spark, tfjs, tflite"):
        compile(train_model("lr"), churn_data["holdout"], targets=["onxx"], private_key=keypair["private"])


def test_parity_failure_names_model_target_runtime_and_diff(train_model: Any, churn_data: dict[str, Any], keypair: dict[str, Any], tmp_path: Path) -> None:
    # A tolerance below float32 resolution makes the float32 tree artifact fail honestly.
    with pytest.raises(ParityError) as info:
        compile(train_model("rf"), churn_data["holdout"], targets=["onnx"], name="strict", private_key=keypair["private"], tolerance=1e-12, out_dir=tmp_path / "b")
    msg = str(info.value)
    assert "'strict'" in msg and "target onnx" in msg and "onnxruntime" in msg and "max |dp|" in msg
    assert not (tmp_path / "b").exists(), "nothing is written when parity fails"

    result = compile(train_model("rf"), churn_data["holdout"], targets=["onnx"], name="strict", private_key=keypair["private"], tolerance=1e-12, allow_parity_failure=True, out_dir=tmp_path / "b")
    assert result.manifest["parity"][0]["passed"] is False
    assert (tmp_path / "b" / "manifest.json").exists()


def test_cli_errors_are_one_line_without_traceback(tmp_path: Path, keypair: dict[str, Any], train_model: Any, churn_data: dict[str, Any]) -> None:
    sample = tmp_path / "sample.csv"
    churn_data["holdout"].to_csv(sample, index=False)
    bad_model = tmp_path / "model.joblib"
    bad_model.write_bytes(b"definitely not a pickle")
    good_model = tmp_path / "good.joblib"
    joblib.dump(train_model("lr"), good_model)
    base = ["--sample", str(sample), "--name", "churn", "--version", "1", "--key", str(keypair["private_path"]), "--out", str(tmp_path / "out")]
    cases = [
        (["compile", str(bad_model), *base], "cannot load model file"),
        (["compile", str(tmp_path / "absent.joblib"), *base], "does not exist"),
        (["compile", str(good_model), *base, "--label", "Nope"], "label column 'Nope' is not in the sample"),
        (["compile", str(good_model), *base[:-2], "--out", str(tmp_path / "o2"), "--sample", str(tmp_path / "none.csv")], "sample file"),
        (["compile", str(good_model), *base[:6], "--key", str(keypair["public_path"]), "--out", str(tmp_path / "o3")], "not an unencrypted PEM private key"),
    ]
    for argv, expected in cases:
        proc = _cli(*argv)
        assert proc.returncode == 1, (argv, proc.stderr)
        assert expected in proc.stderr, (expected, proc.stderr)
        assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("family", ["lr", "rf", "gb", "hgb"])
def test_cli_compile_inspect_verify(family: str, tmp_path: Path, keypair: dict[str, Any], train_model: Any, churn_data: dict[str, Any]) -> None:
    """The acceptance run: `edgefleet compile` of LR, RF(100), GB and HGB churn pipelines to onnx,pmml."""
    import json

    sample = tmp_path / "sample.csv"
    churn_data["holdout"].to_csv(sample, index=False)
    model = tmp_path / f"{family}.joblib"
    joblib.dump(train_model(family), model)
    out = tmp_path / "churn-v1"
    proc = _cli("compile", str(model), "--sample", str(sample), "--label", "Churn", "--name", "churn", "--version", "1",
                "--targets", "onnx,pmml", "--key", str(keypair["private_path"]), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "onnx: build ... done" in proc.stderr and "pmml: parity" in proc.stderr, "progress is shown"
    proc = _cli("inspect", str(out) + ".tar")
    assert proc.returncode == 0
    for text in ("Parity", "onnxruntime", "pypmml", "TotalCharges", "auroc="):
        assert text in proc.stdout
    data = json.loads(_cli("inspect", str(out), "--json").stdout)
    assert {a["format"] for a in data["artifacts"]} == {"onnx", "pmml"}
    assert all(p["passed"] and p["max_abs_diff"] <= 1e-5 for p in data["parity"])
    proc = _cli("verify", str(out) + ".tar", "--pubkey", str(keypair["public_path"]))
    assert proc.returncode == 0 and proc.stdout.startswith("OK: churn v1")


def test_pmml_without_java_says_how_to_install(tmp_path: Path, keypair: dict[str, Any], train_model: Any, churn_data: dict[str, Any]) -> None:
    import os

    sample = tmp_path / "sample.csv"
    churn_data["holdout"].to_csv(sample, index=False)
    model = tmp_path / "lr.joblib"
    joblib.dump(train_model("lr"), model)
    env = {**os.environ, "PATH": str(tmp_path / "empty-bin")}  # no java reachable
    proc = subprocess.run(
        [sys.executable, "-m", "edgefleet_cli.main", "compile", str(model), "--sample", str(sample), "--name", "churn", "--version", "1",
         "--targets", "onnx,pmml", "--key", str(keypair["private_path"]), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 1
    assert "pmml target needs Java on PATH" in proc.stderr and "apt-get install default-jre-headless" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
