"""Every (model family x target) pair, scored by that format's real runtime.

Two checks per pair: the compile's own parity gate passed and recorded it in the manifest, and
an independent re-score here, on data the compiler never saw (shifted prices, more missing
values), loading the artifact from the written bundle with onnxruntime or pypmml directly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edgefleet.bundle_format import open_bundle
from edgefleet.encoding import encode_columns
from edgefleet_cli.samples.telco_churn import CATEGORICAL, NUMERIC
from tests.conftest import FAMILIES, TARGETS

TOL = 1e-5


def _score_onnx(data: bytes, features: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["label", "probabilities"]
    assert all(o.type.startswith("tensor(") for o in sess.get_outputs()), "no ZipMap / seq(map) outputs"
    return np.asarray(sess.run(["probabilities"], {"features": features})[0], dtype=np.float64)


def _score_pmml(path: str, frame: Any, classes: list[Any]) -> np.ndarray:
    from compiler.targets.pmml import score_file

    return score_file(path, frame, classes)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("family", FAMILIES)
def test_artifact_matches_source_model(family: str, target: str, compiled: Any, train_model: Any, fresh_data: Any) -> None:
    result = compiled(family)
    report = next(p for p in result.manifest["parity"] if p["format"] == target)
    assert report["passed"], report
    assert report["max_abs_diff"] <= TOL
    assert report["label_mismatches"] == 0
    assert report["rows"] >= 1000

    model = train_model(family)
    expected = model.predict_proba(fresh_data[CATEGORICAL + NUMERIC])
    bundle = open_bundle(result.archive)
    art = next(a for a in result.manifest["artifacts"] if a["format"] == target)
    if target == "onnx":
        features = encode_columns(result.manifest["input_schema"]["fields"], fresh_data)
        got = _score_onnx(bundle.artifact_bytes(art["path"]), features)
    else:
        got = _score_pmml(str(result.bundle_dir / art["path"]), fresh_data, result.manifest["output"]["classes"])
    diff = np.abs(got - expected).max()
    assert diff <= TOL, f"{family}/{target}: max |dp| {diff}"
    ties = np.abs(expected[:, 1] - 0.5) <= 1e-6
    assert np.array_equal((got[:, 1] > 0.5)[~ties], (expected[:, 1] > 0.5)[~ties])
