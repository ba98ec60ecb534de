"""The device drop folder reads CSV and JSON Lines by the same file rule as ``edgefleet score`` (issue 12, "CSV vs JSONL").

Real pieces: the inbox scores through a real Scorer on a bundle compiled here; files are written as a user
would (pandas, json). Extra fields are ignored in both formats, numbers as strings are accepted in both,
``_entity_id`` is carried, and every file it cannot read is moved to rejected/ with its reason.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from runtimes.python.inbox import score_folder


@pytest.fixture(scope="module")
def scorer(train_model: Any, churn_data: dict[str, Any], keypair: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Any:
    from compiler import compile
    from runtimes.python import Scorer

    out = tmp_path_factory.mktemp("inbox_bundle") / "churn-lr"
    result = compile(train_model("lr"), churn_data["holdout"], targets=["onnx"], name="churn", version=2, private_key=keypair["private"], out_dir=out)
    return Scorer.from_bundle(result.archive, keypair["public_path"])


def test_csv_and_jsonl_score_alike_with_extras_and_string_numbers(scorer: Any, fresh_data: Any, tmp_path: Path) -> None:
    df = fresh_data.head(12).reset_index(drop=True).astype(object).where(fresh_data.head(12).notna(), None)
    df["_entity_id"] = [f"cust-{i}" for i in range(len(df))]
    df.loc[5, "tenure"] = "forty"
    df.to_csv(tmp_path / "batch.csv", index=False)  # customerID and Churn are extra columns; every number is text
    with open(tmp_path / "batch.jsonl", "w") as fh:
        for r in df.to_dict("records"):
            r = {**r, "MonthlyCharges": None if r["MonthlyCharges"] is None else str(r["MonthlyCharges"])}  # a string number
            fh.write(json.dumps(r) + "\n")
    seen: list[str | None] = []

    def score(rec: dict[str, Any], entity: Any) -> Any:
        seen.append(entity)
        return scorer.score(rec)

    n, rejected = score_folder(tmp_path, score, scorer.fields, min_age=0)
    assert rejected == [] and n == 22
    rows = list(csv.DictReader(open(tmp_path / "scored" / "batch.csv", newline="")))
    lines = [json.loads(x) for x in (tmp_path / "scored" / "batch.jsonl").read_text().splitlines()]
    assert [r["entity_id"] for r in rows] == [x["entity_id"] for x in lines] == list(df["_entity_id"])
    assert rows[5]["error"] == "row 6, field 'tenure': 'forty' is not a number"
    assert lines[5]["error"] == "line 6, field 'tenure': 'forty' is not a number"
    good = [i for i in range(12) if i != 5]
    assert [float(rows[i]["probability"]) for i in good] == pytest.approx([lines[i]["probability"] for i in good], abs=1e-12)
    assert all(rows[i]["error"] == "" and "error" not in lines[i] for i in good)
    assert sorted((tmp_path / "done").iterdir()) == [tmp_path / "done" / "batch.csv", tmp_path / "done" / "batch.jsonl"]
    assert seen.count("cust-0") == 2


def test_files_it_cannot_read_are_rejected_with_the_reason(scorer: Any, fresh_data: Any, tmp_path: Path) -> None:
    fresh_data.head(3).to_csv(tmp_path / "semi.csv", index=False, sep=";")
    fresh_data.head(3).drop(columns=["tenure"]).to_csv(tmp_path / "short.csv", index=False)
    (tmp_path / "empty.csv").write_bytes(b"")
    fresh_data.head(3).to_parquet(tmp_path / "batch.parquet", index=False)
    (tmp_path / "notes.txt").write_text("hello\n")
    fresh_data.head(3).to_csv(tmp_path / "writing.csv.tmp", index=False)  # still being written: left alone
    n, rejected = score_folder(tmp_path, lambda rec, entity: scorer.score(rec), scorer.fields, min_age=0)
    reasons = dict(rejected)
    assert n == 0 and sorted(reasons) == ["batch.parquet", "empty.csv", "notes.txt", "semi.csv", "short.csv"]
    assert "semi.csv looks ';'-delimited" in reasons["semi.csv"]
    assert reasons["short.csv"].startswith("short.csv has no column 'tenure'")
    assert reasons["empty.csv"] == "empty.csv is empty"
    assert "scores .jsonl and .csv files" in reasons["batch.parquet"] and "edgefleet score --input FILE.parquet" in reasons["batch.parquet"]
    for name, reason in reasons.items():
        assert (tmp_path / "rejected" / f"{name}.reason").read_text().strip() == reason and not (tmp_path / name).exists()
    assert (tmp_path / "writing.csv.tmp").exists()


def test_entity_id_defaults_to_the_first_non_input_column_and_fresh_files_wait(scorer: Any, fresh_data: Any, tmp_path: Path) -> None:
    """customers.csv as exported (customerID first, no _entity_id): the id joins outcomes; a file still being copied is not read."""
    import os
    import time

    df = fresh_data.head(5).reset_index(drop=True).drop(columns=["customerID"], errors="ignore")
    df.insert(0, "customerID", [f"C-{i}" for i in range(len(df))])
    df.to_csv(tmp_path / "customers.csv", index=False)
    with open(tmp_path / "more.jsonl", "w") as fh:
        for r in df.astype(object).where(df.notna(), None).to_dict("records"):
            fh.write(json.dumps(r) + "\n")
    seen: list[Any] = []

    def score(rec: dict[str, Any], entity: Any) -> Any:
        seen.append(entity)
        return scorer.score(rec)

    n, rejected = score_folder(tmp_path, score, scorer.fields)  # the default minimum age: both files were just written
    assert (n, rejected, seen) == (0, [], []) and (tmp_path / "customers.csv").exists()
    old = time.time() - 5
    for name in ("customers.csv", "more.jsonl"):
        os.utime(tmp_path / name, (old, old))
    n, rejected = score_folder(tmp_path, score, scorer.fields)
    assert n == 10 and rejected == []
    assert seen == [f"C-{i}" for i in range(5)] * 2
    rows = list(csv.DictReader(open(tmp_path / "scored" / "customers.csv", newline="")))
    assert [r["entity_id"] for r in rows] == [f"C-{i}" for i in range(5)]
