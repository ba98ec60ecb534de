"""The Kotlin encoder's TFLite input for 1,000 held-out rows, fed to ai-edge-litert from Python,
scores like the Python Scorer (max |dp| <= 1e-6), and is bit-identical to edgefleet.encoding's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgefleet.encoding import encode_records
from edgefleet_cli.samples.telco_churn import make_telco_churn
from runtimes.python.scorer import Scorer
from tests.web.vectors import _records


def test_kotlin_tflite_input_scores_like_the_python_scorer(kotlin: Any, make_tflite_bundle: Callable[..., Path], keypair: dict[str, Any],
                                                           tmp_path: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    bundle = make_tflite_bundle(1)
    scorer = Scorer.from_bundle(bundle, keypair["public"])  # the Python runtime's own choice of backend (onnx first)
    fields = scorer.manifest["input_schema"]["fields"]
    frame = make_telco_churn(1000, seed=20261202, price_shift=0.05, missing_rate=0.05)  # rows no compile saw, some missing
    records = json.loads(json.dumps(_records(frame, [f["name"] for f in fields])))
    assert len(records) == 1000 and any(v is None for r in records for v in r.values())
    (tmp_path / "records.json").write_text(json.dumps(records))
    out = kotlin("dump", str(bundle), str(keypair["public_path"]), str(tmp_path / "records.json"), str(tmp_path / "tensor.bin"), check=False)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["dtype"] == "float64" and (info["rows"], info["cols"]) == (1000, len(fields))
    bits = np.fromfile(tmp_path / "tensor.bin", dtype=np.int64).reshape(1000, len(fields))
    assert np.array_equal(bits, encode_records(fields, records).view(np.int64)), "Kotlin's bits differ from edgefleet.encoding's"

    interp = Interpreter(model_content=open_tflite(bundle))
    inp = interp.get_input_details()[0]
    interp.resize_tensor_input(inp["index"], [1000, len(fields)])
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], bits.view(np.float64))
    interp.invoke()
    p_kotlin = interp.get_tensor(interp.get_output_details()[0]["index"]).astype(np.float64)
    p_python = np.array([p.probabilities for p in scorer.score_many(records)], dtype=np.float64)
    p_same = np.array([p.probabilities for p in Scorer.from_bundle(bundle, keypair["public"], backend="tflite").score_many(records)])
    dp = float(np.max(np.abs(p_kotlin - p_python)))
    dp_same = float(np.max(np.abs(p_kotlin - p_same)))
    print(f"max |dp| over 1000 rows, Kotlin input -> ai-edge-litert vs the Python Scorer: {dp:.3g} on its default {scorer.backend_name} "
          f"backend, {dp_same:.3g} on its tflite backend; Kotlin encode {info['us_per_record']:.2f} us/record")
    assert dp <= 1e-6 and dp_same <= 1e-6


def open_tflite(bundle: Path) -> bytes:
    from edgefleet.bundle_format import open_bundle

    return open_bundle(bundle).files["artifacts/model.tflite"]
