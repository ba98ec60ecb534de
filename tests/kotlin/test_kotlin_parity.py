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


def test_kotlin_telemetry_payloads_equal_the_python_runtime(kotlin: Any, make_tflite_bundle: Callable[..., Path], keypair: dict[str, Any],
                                                            tmp_path: Path) -> None:
    """The same records and scores make the same sketch counts as runtimes.python.telemetry.Sketch; the privacy switch drops features."""
    from runtimes.python.telemetry import Sketch

    bundle = make_tflite_bundle(1)
    scorer = Scorer.from_bundle(bundle, keypair["public"])
    fields = scorer.manifest["input_schema"]["fields"]
    frame = make_telco_churn(300, seed=7, price_shift=0.1, missing_rate=0.05)
    records = json.loads(json.dumps(_records(frame, [f["name"] for f in fields])))
    records[3]["Contract"] = "Three year"  # an unseen category (the field ignores unseen ones)
    scores = [p.probability for p in scorer.score_many(records)]
    (tmp_path / "in.json").write_text(json.dumps({"records": records, "scores": scores}))
    out = kotlin("sketch", str(bundle), str(keypair["public_path"]), str(tmp_path / "in.json"), str(tmp_path / "out.json"), check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    got = json.loads((tmp_path / "out.json").read_text())
    sketch = Sketch(scorer.manifest)
    for rec, score in zip(records, scores):
        sketch.add(rec, encode_records(fields, [rec]), score)
    want = sketch.to_body(0.0, 1.0, "dev-1")
    assert got["sketch"]["fields"] == want["fields"] and got["sketch"]["score"] == want["score"] and got["sketch"]["n"] == 300
    assert got["sketch"]["fields"]["Contract"]["unseen"] == 1 and sum(e["missing"] for e in got["sketch"]["fields"].values()) > 0
    assert got["with_features"]["features"] == records[0] and "features" not in got["without_features"]
    assert set(got["with_features"]) - {"features"} == set(got["without_features"]) == {
        "device_id", "ts", "model", "model_version", "score", "label", "sample_rate"}
    assert len(set(got["ids"])) == len(got["ids"]) == 301 and all(len(i) == 32 for i in got["ids"])
