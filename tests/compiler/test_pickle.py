"""The ``pickle`` format: compile, score with ``--backend pickle``, and the refusals before unpickling.

Everything is real: the ``edgefleet`` console script, joblib, the signed bundle. The tampered
artifact is a genuine malicious pickle (it would create a marker file when unpickled), so the
test shows the refusal happens before any unpickling.
"""

from __future__ import annotations

import base64
import json
import pickle
import platform
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import sklearn

from edgefleet import keys
from edgefleet.bundle_format import MANIFEST, SIGNATURE, Bundle, canonical_json, open_bundle, verify
from edgefleet.errors import BundleError
from edgefleet_cli.samples.telco_churn import CATEGORICAL, LABEL, NUMERIC
from runtimes.python.backends import PickleBackend, available_backends, load_backend
from runtimes.python.errors import BackendUnavailableError
from runtimes.python.scorer import Scorer
from tests.cli.conftest import run_cli


class _Boom:
    """Unpickling this creates ``path``: proof that code ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (Path(self.path),))


@pytest.fixture(scope="module")
def lr_pickle(train_model: Any, churn_data: dict[str, Any], keypair: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Any:
    from compiler import compile

    out = tmp_path_factory.mktemp("pickle") / "churn-pickle"
    return compile(train_model("lr"), churn_data["holdout"], targets=["pickle"], name="churn-pickle", version=1,
                   private_key=keypair["private"], label=LABEL, out_dir=out)


def _resign(files: dict[str, bytes], manifest: dict[str, Any], key: Any) -> dict[str, bytes]:
    body = canonical_json(manifest)
    return {**files, MANIFEST: body, SIGNATURE: base64.b64encode(keys.sign(key, body)) + b"\n"}


def test_pickle_manifest_records_exact_versions_and_parity_in_a_fresh_process(lr_pickle: Any) -> None:
    art = lr_pickle.manifest["artifacts"][0]
    assert art["format"] == "pickle" and art["input_kind"] == "fields"
    assert art["requires"] == {"python": platform.python_version(), "scikit-learn": sklearn.__version__}
    rep = lr_pickle.manifest["parity"][0]
    assert rep["passed"] and rep["max_abs_diff"] == 0.0  # the same pipeline, unpickled in a fresh process
    assert "pickle" not in available_backends()  # never a device capability by default


def test_cli_compile_pickle_then_score_backend_pickle_equals_sklearn_exactly(train_model: Any, churn_data: dict[str, Any],
                                                                              keypair: dict[str, Any], tmp_path: Path) -> None:
    model = train_model("rf")
    joblib.dump(model, tmp_path / "model.joblib")
    hold = churn_data["holdout"]
    hold.to_csv(tmp_path / "holdout.csv", index=False)
    proc = run_cli("compile", "model.joblib", "--sample", "holdout.csv", "--label", LABEL, "--targets", "pickle",
                   "--key", str(keypair["private_path"]), "--out", "bundle", "--name", "churn-rf", "--version", "1", cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "pickle: scikit-learn" in proc.stdout and "parity passed" in proc.stdout
    proc = run_cli("score", "bundle.tar", "--pubkey", str(keypair["public_path"]), "--input", "holdout.csv",
                   "--backend", "pickle", "--output", "out.jsonl", cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    import pandas as pd

    frame = pd.read_csv(tmp_path / "holdout.csv")
    want = model.predict_proba(frame[CATEGORICAL + NUMERIC])[:, 1]
    scored = [r for r in rows if r.get("error") is None]
    assert len(scored) == len(frame)
    assert all(r["backend"] == "pickle" for r in scored)
    got = np.array([r["probability"] for r in scored])
    assert np.array_equal(got, want)  # exactly, not within a tolerance


def test_tampered_pickle_is_refused_before_unpickling(lr_pickle: Any, keypair: dict[str, Any], tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    evil = pickle.dumps(_Boom(str(marker)))
    pickle.loads(evil)  # the payload is real: unpickling it does run code
    assert marker.exists()
    marker.unlink()
    bundle = lr_pickle.bundle_dir
    (bundle / "artifacts" / "model.joblib").write_bytes(evil)
    with pytest.raises(BundleError, match="signed manifest says"):
        Scorer.from_bundle(bundle, keypair["public_path"], backend="pickle")
    assert not marker.exists()
    # a caller that skips verify and hands the backend a verified manifest with other bytes: refused too
    files = {**lr_pickle.files, "artifacts/model.joblib": evil}
    with pytest.raises(BundleError, match="refused before loading"):
        load_backend(lr_pickle.manifest, files, prefer="pickle")
    with pytest.raises(BundleError, match="verified bundle"):
        PickleBackend(evil, lr_pickle.manifest["artifacts"][0], lr_pickle.manifest.to_dict())
    assert not marker.exists()


@pytest.mark.parametrize("field,value", [("scikit-learn", "0.24.2"), ("python", "3.7.17")])
def test_version_mismatch_is_refused_naming_both_versions(lr_pickle: Any, keypair: dict[str, Any], tmp_path: Path,
                                                          field: str, value: str) -> None:
    marker = tmp_path / "unpickled"
    manifest = lr_pickle.manifest.to_dict()
    evil = pickle.dumps(_Boom(str(marker)))  # signed, hash-correct, but from another version: still never unpickled
    manifest["artifacts"][0]["requires"][field] = value
    manifest["artifacts"][0]["sha256"] = __import__("hashlib").sha256(evil).hexdigest()
    manifest["artifacts"][0]["size"] = len(evil)
    files = _resign({**lr_pickle.files, "artifacts/model.joblib": evil}, manifest, keypair["private"])
    verified = verify(Bundle("resigned", files[MANIFEST], base64.b64decode(files[SIGNATURE]), files), keypair["public"])
    with pytest.raises(BackendUnavailableError) as err:
        Scorer(verified, files, backend="pickle")
    have = sklearn.__version__ if field == "scikit-learn" else platform.python_version()
    assert value in str(err.value) and have in str(err.value), str(err.value)
    assert not marker.exists()


def test_pickle_scorer_matches_sklearn_on_records(lr_pickle: Any, train_model: Any, churn_data: dict[str, Any],
                                                 keypair: dict[str, Any]) -> None:
    bundle = open_bundle(lr_pickle.archive)
    scorer = Scorer(verify(bundle, keypair["public"]), bundle.files, backend="pickle")
    frame = churn_data["holdout"].head(200)
    records = [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
               for r in frame[CATEGORICAL + NUMERIC].to_dict(orient="records")]
    got = np.array([p.probability for p in scorer.score_many(records)])
    want = train_model("lr").predict_proba(frame[CATEGORICAL + NUMERIC])[:, 1]
    assert np.array_equal(got, want)


def test_fleet_server_assigns_pickle_or_spark_only_to_a_device_that_declared_it() -> None:
    from fleet_server.devices import choose_format

    assert choose_format({"backends": ["onnx", "tflite"]}, ["pickle", "spark"])[0] is None
    assert choose_format({"formats": ["onnx"]}, ["onnx", "pickle"]) == ("onnx", "")
    assert choose_format({"formats": ["pickle", "onnx"]}, ["onnx", "pickle"])[0] == "onnx"  # devices keep preferring ONNX
    assert choose_format({"formats": ["pickle"]}, ["onnx", "pickle"])[0] == "pickle"
    assert choose_format({"formats": ["spark"]}, ["spark", "tflite"])[0] == "spark"
