"""A newcomer's compile mistakes get one line that says what is wrong and how to fix it (issue 12, "misleading messages").

Each case runs the real ``edgefleet compile`` / ``verify`` command on real files: a sample with a bad cell, a
';'- or tab-delimited sample, an empty one, a model fitted on a numpy array, a legacy HDF5 Keras file, a cut
bundle archive. Two control cases show the fix works: ``--feature-names`` and a Parquet ``--sample``.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import joblib
import pytest

from edgefleet_cli.samples.telco_churn import LABEL, NUMERIC


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgefleet_cli.main", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("edgefleet: error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def files(train_model: Any, churn_data: dict[str, Any], keypair: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import h5py
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    d = tmp_path_factory.mktemp("messages")
    joblib.dump(train_model("lr"), d / "churn_lr.joblib")
    holdout = churn_data["holdout"]
    holdout.to_csv(d / "holdout.csv", index=False)
    bad = holdout.astype({"tenure": object}).copy()
    bad.loc[6, "tenure"] = "forty"
    bad.to_csv(d / "forty.csv", index=False)
    holdout.to_csv(d / "semicolon.csv", index=False, sep=";")
    holdout.to_csv(d / "tabs.csv", index=False, sep="\t")
    (d / "empty.csv").write_bytes(b"")
    holdout.head(0).to_csv(d / "header-only.csv", index=False)
    holdout.to_parquet(d / "holdout.parquet", index=False)
    tr = churn_data["train"].dropna(subset=NUMERIC)
    numpy_fit = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(tr[NUMERIC].to_numpy(), tr[LABEL].to_numpy())
    joblib.dump(numpy_fit, d / "numpy_fit.joblib")
    with h5py.File(d / "legacy.h5", "w") as h5:  # a real HDF5 file, as Keras 2's model.save("m.h5") wrote
        h5.attrs["keras_version"] = "2.15.0"
        h5.create_group("model_weights")
    return {"dir": d, "key": str(keypair["private_path"]), "pub": str(keypair["public_path"])}


def compile_args(files: dict[str, Any], model: str, sample: str, *extra: str) -> list[str]:
    d = files["dir"]
    return ["compile", str(d / model), "--sample", str(d / sample), "--label", LABEL, "--name", "churn", "--version", "1",
            "--key", files["key"], "--out", str(d / f"out-{model}-{sample}".replace(".", "_")), "--quiet", *extra]


CASES = [
    ("forty.csv", "churn_lr.joblib", ["sample row 7, field 'tenure': 'forty' is not a number"]),
    ("semicolon.csv", "churn_lr.joblib", ["semicolon.csv looks ';'-delimited", "re-save it with ','"]),
    ("tabs.csv", "churn_lr.joblib", ["tabs.csv looks tab-delimited"]),
    ("empty.csv", "churn_lr.joblib", ["empty.csv is empty"]),
    ("header-only.csv", "churn_lr.joblib", ["header-only.csv is empty: it has a header (", "and no rows"]),
    ("holdout.csv", "numpy_fit.joblib", ["fitted without column names", "n_features_in_=4", "fit it on a pandas DataFrame", "--feature-names"]),
    ("holdout.csv", "legacy.h5", ["legacy HDF5 (.h5) Keras file", 'model.save("m.keras")']),
]


def test_compile_mistakes_are_one_line_with_the_fix(files: dict[str, Any]) -> None:
    def run(case: tuple[str, str, list[str]]) -> tuple[tuple[str, str, list[str]], subprocess.CompletedProcess[str]]:
        sample, model, _ = case
        return case, cli(*compile_args(files, model, sample), cwd=files["dir"])

    with ThreadPoolExecutor(max_workers=2) as pool:
        for (sample, model, expect), proc in pool.map(run, CASES):
            line = error_line(proc)
            for e in expect:
                assert e in line, (sample, model, line)
            assert "unsupported pipeline step" not in line and "missing column(s)" not in line and "UnpicklingError" not in line, line


def test_feature_names_fix_a_numpy_fitted_model_and_parquet_samples_work(files: dict[str, Any]) -> None:
    d = files["dir"]
    proc = cli(*compile_args(files, "numpy_fit.joblib", "holdout.csv", "--feature-names", ",".join(NUMERIC)), cwd=d)
    assert proc.returncode == 0, proc.stderr
    proc = cli("inspect", str(d / "out-numpy_fit_joblib-holdout_csv.tar"), "--json", cwd=d)
    assert proc.returncode == 0, proc.stderr
    assert [f["name"] for f in __import__("json").loads(proc.stdout)["input_schema"]["fields"]] == NUMERIC
    wrong = cli(*compile_args(files, "numpy_fit.joblib", "holdout.csv", "--feature-names", "tenure,MonthlyCharges"), cwd=d)
    assert "--feature-names gives 2 names but" in error_line(wrong) and "fitted on 4 columns" in error_line(wrong)
    proc = cli(*compile_args(files, "churn_lr.joblib", "holdout.parquet"), cwd=d)
    assert proc.returncode == 0, proc.stderr
    assert "passed" in proc.stdout


def test_a_cut_bundle_archive_says_truncated(files: dict[str, Any]) -> None:
    import tarfile

    d = files["dir"]
    proc = cli(*compile_args(files, "churn_lr.joblib", "holdout.csv"), cwd=d)
    assert proc.returncode == 0, proc.stderr
    archive = d / "out-churn_lr_joblib-holdout_csv.tar"
    data = archive.read_bytes()
    with tarfile.open(archive) as tar:
        starts = {m.name: m.offset for m in tar.getmembers()}
    # cut right before the signature's header (tarfile alone would call it "signature missing"), inside a member, inside a header
    for cut in (starts["signature"], starts["manifest.json"] + 700, 100):
        (d / "cut.tar").write_bytes(data[:cut])
        line = error_line(cli("verify", str(d / "cut.tar"), "--pubkey", files["pub"], cwd=d))
        assert "cut.tar is truncated" in line and "signature file is missing" not in line, (cut, line)


def test_a_parquet_sample_without_pyarrow_names_the_extra(files: dict[str, Any]) -> None:
    """An install without pyarrow (its import blocked in the real CLI process) is told which extra to install."""
    launcher = "import sys; sys.modules['pyarrow'] = None; from edgefleet_cli.main import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-c", launcher, *compile_args(files, "churn_lr.joblib", "holdout.parquet")], cwd=files["dir"],
                          capture_output=True, text=True, timeout=300)
    line = error_line(proc)
    assert "holdout.parquet" in line and "Parquet needs pyarrow" in line and "pip install 'edgefleet[parquet]'" in line, line
