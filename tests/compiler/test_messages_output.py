"""Compile output is edgefleet's own: TensorFlow/absl/LiteRT noise is held back unless --verbose, numbers are formatted.

Runs the real ``edgefleet compile`` on a real ``.keras`` model to the onnx and tflite targets (the ones that load
TensorFlow and LiteRT, whose C++ logging writes straight to stderr), with and without ``--verbose``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgefleet_cli.samples.telco_churn import LABEL, NUMERIC

NOISE = ("oneDNN", "XNNPACK", "absl::InitializeLog", "TF_ENABLE_ONEDNN_OPTS")
OWN_LINE = re.compile(r"^(\[\d+/\d+\] .* (done|failed) \(\d+\.\ds\)|      .+|compiled churnk v1 to .+ in \d+\.\ds)$")


@pytest.fixture(scope="module")
def keras_file(churn_data: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    import keras

    tr = churn_data["train"].dropna(subset=NUMERIC)
    X = tr[NUMERIC].to_numpy(np.float32)
    keras.utils.set_random_seed(0)
    norm = keras.layers.Normalization()
    norm.adapt(X)
    m = keras.Sequential([keras.Input((len(NUMERIC),)), norm, keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1, activation="sigmoid")])
    m.compile(optimizer="adam", loss="binary_crossentropy")
    m.fit(X, tr[LABEL].to_numpy().astype(np.float32), epochs=1, verbose=0)
    path = tmp_path_factory.mktemp("keras_out") / "churn.keras"
    m.save(path)
    return path


def test_third_party_noise_is_held_back_unless_verbose(keras_file: Path, churn_data: dict[str, Any], keypair: dict[str, Any], tmp_path: Path) -> None:
    churn_data["holdout"].to_csv(tmp_path / "holdout.csv", index=False)
    args = [sys.executable, "-m", "edgefleet_cli.main", "compile", str(keras_file), "--feature-names", ",".join(NUMERIC),
            "--sample", str(tmp_path / "holdout.csv"), "--label", LABEL, "--name", "churnk", "--version", "1",
            "--key", str(keypair["private_path"]), "--targets", "onnx,tflite"]
    quiet = subprocess.run(args + ["--out", str(tmp_path / "a")], capture_output=True, text=True, timeout=600)
    assert quiet.returncode == 0, quiet.stderr
    for noise in NOISE:
        assert noise not in quiet.stderr + quiet.stdout, noise
    assert all(OWN_LINE.match(line) for line in quiet.stderr.splitlines()), quiet.stderr
    assert re.search(r"onnx: max \|dp\| \d\.\de-\d\d \(tol 1e-05\), label agreement 1\.0000, PASSED", quiet.stderr), quiet.stderr
    for target in ("onnx", "tflite"):
        assert re.search(rf"^{target}: \S+ \S+, max \|dp\| (0|\d(\.\d)?e-\d\d) \(tol 1e-05\), label agreement \d\.\d{{4}}, parity passed$",
                         quiet.stdout, re.M), quiet.stdout
    loud = subprocess.run(args + ["--out", str(tmp_path / "b"), "--verbose"], capture_output=True, text=True, timeout=600)
    assert loud.returncode == 0, loud.stderr
    assert any(noise in loud.stderr for noise in NOISE), "the noise this test guards against no longer exists: " + loud.stderr


def test_a_bad_cell_in_a_keras_sample_is_a_data_error(keras_file: Path, churn_data: dict[str, Any], keypair: dict[str, Any], tmp_path: Path) -> None:
    bad = churn_data["holdout"].astype({"tenure": object}).copy()
    bad.loc[6, "tenure"] = "forty"
    bad.to_csv(tmp_path / "forty.csv", index=False)
    proc = subprocess.run([sys.executable, "-m", "edgefleet_cli.main", "compile", str(keras_file), "--feature-names", ",".join(NUMERIC),
                           "--sample", str(tmp_path / "forty.csv"), "--name", "churnk", "--version", "1", "--key", str(keypair["private_path"]),
                           "--out", str(tmp_path / "c"), "--quiet"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip() == "edgefleet: error: sample row 7, field 'tenure': 'forty' is not a number"
