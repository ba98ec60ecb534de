"""``edgefleet score`` speaks CSV, JSON Lines and Parquet, carries an id through, and names every bad row (issue 12).

Every case runs the real ``edgefleet`` console script on a bundle compiled here (LogisticRegression,
ONNX) and reads what it wrote with the csv module, json and pyarrow: nothing is mocked.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EDGEFLEET = ROOT / ".venv" / "bin" / "edgefleet"
if not EDGEFLEET.exists():
    EDGEFLEET = Path(sys.executable).with_name("edgefleet")


@pytest.fixture(scope="module")
def bundle(train_model: Any, churn_data: dict[str, Any], keypair: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from compiler import compile
    from edgefleet_cli.samples.telco_churn import LABEL

    out = tmp_path_factory.mktemp("score_bundle") / "churn-lr"
    result = compile(train_model("lr"), churn_data["holdout"], targets=["onnx"], name="churn", version=4,
                     private_key=keypair["private"], label=LABEL, out_dir=out)
    from runtimes.python import Scorer

    return {"archive": str(result.archive), "pub": str(keypair["public_path"]), "scorer": Scorer.from_bundle(result.archive, keypair["public_path"])}


@pytest.fixture(scope="module")
def customers(fresh_data: Any) -> Any:
    df = fresh_data.head(40).copy().reset_index(drop=True)
    df["customerID"] = [f"CUST-{i:04d}" for i in range(len(df))]  # first column already
    return df


def score(bundle: dict[str, Any], *args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(EDGEFLEET), "score", bundle["archive"], "--pubkey", bundle["pub"], *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, env=env)


def one_line_error(proc: subprocess.CompletedProcess[str], *expect: str) -> str:
    assert proc.returncode != 0, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    for e in expect:
        assert e in lines[0], lines[0]
    assert proc.stdout == ""
    return lines[0]


def expected(bundle: dict[str, Any], frame: Any) -> list[float]:
    """What the device Scorer says for the same rows (records as a program would pass them)."""
    fields = [f["name"] for f in bundle["scorer"].fields]
    recs = [{k: (None if v != v else v) for k, v in r.items()} for r in frame[fields].to_dict("records")]
    return [p.probability for p in bundle["scorer"].score_many(recs)]


def summary(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("scored ")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_csv_to_csv_carries_the_first_non_input_column(bundle: dict[str, Any], customers: Any, tmp_path: Path) -> None:
    customers.to_csv(tmp_path / "customers.csv", index=False)
    proc = score(bundle, "--input", "customers.csv", "--output", "scores.csv", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(open(tmp_path / "scores.csv", newline="")))
    assert list(rows[0]) == ["customerID", "row", "probability", "label", "model_version", "backend", "error"]
    assert [r["customerID"] for r in rows] == list(customers["customerID"])
    assert [int(r["row"]) for r in rows] == list(range(1, 41))
    assert [float(r["probability"]) for r in rows] == pytest.approx(expected(bundle, customers), abs=1e-12)
    assert all(r["model_version"] == "4" and r["error"] == "" for r in rows)
    line = summary(proc)
    assert "scored 40 rows, rejected 0" in line and "scores.csv (csv)" in line
    assert "id column: customerID (the first input column that is not a model input" in line


def test_csv_to_parquet_and_parquet_back(bundle: dict[str, Any], customers: Any, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    customers.to_csv(tmp_path / "customers.csv", index=False)
    proc = score(bundle, "--input", "customers.csv", "--output", "scores.parquet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    table = pq.read_table(tmp_path / "scores.parquet")
    assert str(table.schema.field("probability").type) == "double" and str(table.schema.field("label").type) == "int64"
    got = table.to_pylist()
    assert [r["customerID"] for r in got] == list(customers["customerID"])
    assert [r["probability"] for r in got] == pytest.approx(expected(bundle, customers), abs=1e-12)
    # Parquet in (pandas writes it with native types and nulls), JSON Lines out
    customers.to_parquet(tmp_path / "customers.parquet", index=False)
    proc = score(bundle, "--input", "customers.parquet", "--output", "again.jsonl", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    again = [json.loads(x) for x in (tmp_path / "again.jsonl").read_text().splitlines()]
    assert [r["customerID"] for r in again] == list(customers["customerID"])
    assert [r["probability"] for r in again] == pytest.approx(expected(bundle, customers), abs=1e-12)


def test_jsonl_to_jsonl_same_rule_as_csv(bundle: dict[str, Any], customers: Any, tmp_path: Path) -> None:
    """Extra fields ignored and numbers given as strings accepted, as in CSV; the entity key comes first."""
    with open(tmp_path / "in.jsonl", "w") as fh:
        for i, r in enumerate(customers.to_dict("records")):
            r = {k: (None if v != v else v) for k, v in r.items()}
            r["tenure"] = str(r["tenure"]) if r["tenure"] is not None else None  # a string number, as CSV has
            r["_entity_id"] = f"ent-{i}"
            fh.write(json.dumps(r) + "\n")
    proc = score(bundle, "--input", "in.jsonl", "--output", "out.ndjson", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = [json.loads(x) for x in (tmp_path / "out.ndjson").read_text().splitlines()]
    assert [r["_entity_id"] for r in out] == [f"ent-{i}" for i in range(40)]
    assert [r["probability"] for r in out] == pytest.approx(expected(bundle, customers), abs=1e-12)
    assert "id column: _entity_id (the entity key)" in summary(proc)
    proc = score(bundle, "--input", "in.jsonl", "--output", "by-customer.jsonl", "--id-column", "customerID", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = [json.loads(x) for x in (tmp_path / "by-customer.jsonl").read_text().splitlines()]
    assert [r["customerID"] for r in out] == list(customers["customerID"]) and "_entity_id" not in out[0]


def test_format_flag_and_unknown_extension(bundle: dict[str, Any], customers: Any, tmp_path: Path) -> None:
    customers.to_csv(tmp_path / "customers.csv", index=False)
    one_line_error(score(bundle, "--input", "customers.csv", "--output", "scores.txt", cwd=tmp_path),
                   "scores.txt: unknown extension .txt", "--format csv|jsonl|parquet")
    assert not (tmp_path / "scores.txt").exists()
    proc = score(bundle, "--input", "customers.csv", "--output", "scores.txt", "--format", "csv", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "scores.txt").read_text().startswith("customerID,row,probability")
    one_line_error(score(bundle, "--input", "customers.csv", "--format", "parquet", cwd=tmp_path), "Parquet output needs --output")


def test_bad_rows_are_named_and_the_rest_scores(bundle: dict[str, Any], customers: Any, tmp_path: Path) -> None:
    bad = customers.head(5).astype(object)
    bad.loc[2, "tenure"] = "forty"
    bad.loc[4, "MonthlyCharges"] = "1e999"  # a number by the file rule, refused by the schema (not finite): the one-by-one path
    bad.to_csv(tmp_path / "bad.csv", index=False)
    proc = score(bundle, "--input", "bad.csv", "--output", "out.csv", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(open(tmp_path / "out.csv", newline="")))
    assert rows[2]["error"] == "row 3, field 'tenure': 'forty' is not a number" and rows[2]["probability"] == ""
    assert rows[4]["error"] == "row 5, field 'MonthlyCharges': value inf is not finite"
    assert [r["customerID"] for r in rows] == list(bad["customerID"])
    assert all(r["error"] == "" and 0 <= float(r["probability"]) <= 1 for r in (rows[0], rows[1], rows[3]))
    assert "scored 3 rows, rejected 2" in summary(proc) and "first rejected: row 3, field 'tenure': 'forty' is not a number" in summary(proc)
    # nothing scores: one line, exit 1, and no output file left behind
    (tmp_path / "worse.jsonl").write_text('{"tenure": "forty"}\n')
    one_line_error(score(bundle, "--input", "worse.jsonl", "--output", "none.jsonl", cwd=tmp_path),
                   "no row of", "line 1, field", "missing field")
    assert not (tmp_path / "none.jsonl").exists() and not list(tmp_path.glob(".none.jsonl*"))


def test_unreadable_inputs_and_outputs_are_one_line(bundle: dict[str, Any], customers: Any, tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_bytes(b"")
    customers.head(0).to_csv(tmp_path / "header-only.csv", index=False)
    customers.to_csv(tmp_path / "semi.csv", index=False, sep=";")
    customers.to_csv(tmp_path / "tabs.csv", index=False, sep="\t")
    customers.to_parquet(tmp_path / "parquet-named.csv", index=False)
    customers.drop(columns=["tenure", "Contract"]).to_csv(tmp_path / "short.csv", index=False)
    cases = [("empty.csv", ["empty.csv is empty"]), ("header-only.csv", ["header-only.csv is empty"]),
             ("semi.csv", ["semi.csv looks ';'-delimited"]), ("tabs.csv", ["tabs.csv looks tab-delimited"]),
             ("parquet-named.csv", ["is a Parquet file: name it .parquet"]),
             ("short.csv", ["short.csv has no columns 'Contract', 'tenure'", "its columns: customerID"]),
             ("missing.csv", ["missing.csv does not exist"])]
    for name, expect in cases:
        one_line_error(score(bundle, "--input", name, cwd=tmp_path), *expect)
    customers.to_csv(tmp_path / "customers.csv", index=False)
    one_line_error(score(bundle, "--input", "customers.csv", "--output", "/nonexistent/x.jsonl", cwd=tmp_path), "--output", "/nonexistent")
    one_line_error(score(bundle, "--input", "customers.csv", "--output", str(tmp_path), cwd=tmp_path), "--output", "folder")


def test_parquet_without_pyarrow_names_the_extra(bundle: dict[str, Any], customers: Any, tmp_path: Path) -> None:
    """An install without pyarrow (simulated by blocking its import in the real CLI process) says what to install."""
    customers.to_csv(tmp_path / "customers.csv", index=False)
    launcher = "import sys; sys.modules['pyarrow'] = None; from edgefleet_cli.main import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-c", launcher, "score", bundle["archive"], "--pubkey", bundle["pub"], "--input", "customers.csv",
                           "--output", "s.parquet"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    one_line_error(proc, "writing Parquet needs pyarrow", "pip install 'edgefleet[parquet]'")


def test_progress_on_a_terminal_never_reaches_stdout(bundle: dict[str, Any], customers: Any, tmp_path: Path) -> None:
    """stderr on a real pseudo-terminal: a live progress line is drawn there; the results file and stdout stay clean."""
    import pandas as pd

    big = pd.concat([customers] * 600, ignore_index=True)  # 24,000 rows: three chunks
    big.to_csv(tmp_path / "big.csv", index=False)
    master, slave = os.openpty()
    try:
        proc = subprocess.run([str(EDGEFLEET), "score", bundle["archive"], "--pubkey", bundle["pub"], "--input", "big.csv", "--output", "big.jsonl"],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL, timeout=300)
        os.close(slave)
        seen = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(master)
    assert proc.returncode == 0, seen
    text = seen.decode()
    assert "\rscoring big.csv: 10,000 rows" in text.replace(str(tmp_path) + "/", "") and "rows/s" in text
    assert "scored 24,000 rows, rejected 0" in text
    assert proc.stdout == b""
    lines = (tmp_path / "big.jsonl").read_text().splitlines()
    assert len(lines) == 24_000 and all(line.startswith('{"customerID": "CUST-') for line in lines)


def test_a_parquet_timestamp_id_is_carried_to_every_format(bundle: dict[str, Any], customers: Any, tmp_path: Path) -> None:
    import pandas as pd
    import pyarrow.parquet as pq

    frame = customers.head(3).drop(columns=["customerID"])
    frame.insert(0, "seen_at", pd.to_datetime(["2026-01-01 08:00", "2026-01-02 12:30", "2026-01-03 09:15"]))
    frame.to_parquet(tmp_path / "in.parquet", index=False)
    for out in ("out.jsonl", "out.csv", "out.parquet"):
        proc = score(bundle, "--input", "in.parquet", "--output", out, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert "id column: seen_at" in summary(proc)
    assert [json.loads(x)["seen_at"] for x in (tmp_path / "out.jsonl").read_text().splitlines()][1] == "2026-01-02 12:30:00"
    assert [r["seen_at"] for r in csv.DictReader(open(tmp_path / "out.csv", newline=""))][1] == "2026-01-02 12:30:00"
    assert str(pq.read_table(tmp_path / "out.parquet").schema.field("seen_at").type).startswith("timestamp")
