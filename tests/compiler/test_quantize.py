"""Quantized TFLite artifacts, end to end: CLI -> manifest deltas -> schema -> ai-edge-litert re-score.

A quantized artifact is gated at its own tolerance (``compiler._compile.QUANTIZED_TOLERANCE``:
1e-2 for float16, 5e-2 for int8), and its parity record carries the size and the probability and
label-agreement deltas against the unquantized artifact the compile also built and scored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import joblib
import jsonschema
import numpy as np
import pytest

from compiler import CompileError, compile
from compiler._compile import QUANTIZED_TOLERANCE
from compiler.targets.tflite import run_tflite
from edgefleet.encoding import encode_columns
from edgefleet_cli.samples.telco_churn import CATEGORICAL, LABEL, NUMERIC
from tests.compiler.test_errors import _cli

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "edgefleet" / "schema" / "manifest.schema.json").read_text())


def _check_record(manifest: dict[str, Any], mode: str) -> dict[str, Any]:
    jsonschema.validate(manifest, SCHEMA)
    rep = manifest["parity"][0]
    art = manifest["artifacts"][0]
    q = rep["quantization"]
    assert rep["passed"] and rep["tolerance"] == QUANTIZED_TOLERANCE[mode] and q["mode"] == mode
    assert art["quantization"] == {"mode": mode, "tolerance": QUANTIZED_TOLERANCE[mode], "unquantized_size": q["unquantized_size"]}
    assert q["size"] == art["size"] and q["unquantized_max_abs_diff"] <= 1e-5
    assert 0 < q["vs_unquantized"]["max_abs_diff"] <= QUANTIZED_TOLERANCE[mode] + 1e-5
    assert q["vs_unquantized"]["label_agreement"] >= 0.99 and q["label_agreement_delta"] >= -0.01
    return q


def test_cli_float16_mlp(tmp_path: Path, keypair: dict[str, Any], train_model: Any, churn_data: dict[str, Any], fresh_data: Any) -> None:
    sample = tmp_path / "sample.csv"
    churn_data["holdout"].to_csv(sample, index=False)
    model = train_model("mlp")
    joblib.dump(model, tmp_path / "mlp.joblib")
    out = tmp_path / "churn-f16"
    proc = _cli("compile", str(tmp_path / "mlp.joblib"), "--sample", str(sample), "--label", LABEL, "--name", "churn", "--version", "1",
                "--targets", "tflite", "--quantize", "float16", "--key", str(keypair["private_path"]), "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "float16:" in proc.stdout and "vs unquantized max |dp|" in proc.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    q = _check_record(manifest, "float16")
    assert q["size"] < q["unquantized_size"]
    # independent re-score of rows the compiler never saw, with the real runtime
    features = encode_columns(manifest["input_schema"]["fields"], fresh_data)
    got = np.asarray(run_tflite((out / manifest["artifacts"][0]["path"]).read_bytes(), features), dtype=np.float64)
    assert np.abs(got - model.predict_proba(fresh_data[CATEGORICAL + NUMERIC])).max() <= QUANTIZED_TOLERANCE["float16"]


def test_int8_mlp_and_float16_lr(train_model: Any, churn_data: dict[str, Any], keypair: dict[str, Any]) -> None:
    res = compile(train_model("mlp"), churn_data["holdout"], targets=["tflite"], name="mlp8", private_key=keypair["private"],
                  label=LABEL, quantize="int8")
    q = _check_record(res.manifest, "int8")
    assert q["size"] < q["unquantized_size"]
    from runtimes.python.scorer import Scorer

    # a device replaying the canaries on the int8 artifact uses its tolerance, not the bundle's 1e-5
    assert Scorer(res.manifest, res.files, backend="tflite").check_canaries() == []
    res = compile(train_model("lr"), churn_data["holdout"], targets=["tflite"], name="lr16", private_key=keypair["private"],
                  label=LABEL, quantize="float16")
    _check_record(res.manifest, "float16")


def test_keras_float16(keras_model: Any, churn_data: dict[str, Any], keypair: dict[str, Any]) -> None:
    res = compile(keras_model, churn_data["holdout"], targets=["onnx", "tflite"], name="k16", private_key=keypair["private"],
                  label=LABEL, quantize="float16")
    onnx, tfl = res.manifest["parity"]
    assert "quantization" not in onnx and onnx["tolerance"] == 1e-5 and onnx["passed"]
    jsonschema.validate(res.manifest, SCHEMA)
    assert tfl["passed"] and tfl["quantization"]["vs_unquantized"]["max_abs_diff"] <= 1e-2


def test_quantization_refusals(train_model: Any, churn_data: dict[str, Any], keypair: dict[str, Any]) -> None:
    hold = churn_data["holdout"]
    with pytest.raises(CompileError, match="cannot quantize model 'rf' to float16: RandomForestClassifier is a tree ensemble"):
        compile(train_model("rf"), hold, targets=["tflite"], name="rf", private_key=keypair["private"], quantize="float16")
    with pytest.raises(CompileError, match="--quantize int8 applies to tflite; requested targets: onnx"):
        compile(train_model("lr"), hold, targets=["onnx"], name="lr", private_key=keypair["private"], quantize="int8")
    with pytest.raises(CompileError, match="unknown quantization 'int4'"):
        compile(train_model("lr"), hold, targets=["tflite"], name="lr", private_key=keypair["private"], quantize="int4")
