"""Batch scoring on Spark (runtimes/spark, edgefleet batch-score) into SQLite and PostgreSQL.

In-process runs use the shared local[2] session (tests/support/spark.py); the CLI runs start their own
driver, on local[*] and on a real standalone master + worker. Every score is compared with the device
runtime's ``Scorer.score_many`` on the records ``edgefleet score`` reads from the same file.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from runtimes.spark import BatchConfig, run_batch
from tests.spark.conftest import BAD_CELLS, EDGEFLEET, SparkStandalone, cli, reference_scores, table_rows


def _cfg(files: dict[str, Any], output: str, **kw: Any) -> BatchConfig:
    return BatchConfig(bundle=str(files["bundle"]), pubkey=str(files["pubkey"]), input=str(kw.pop("input", files["bad_csv"])),
                       entity_column="customerID", output=output, **kw)


def _max_dp(url: str, table: str, ref: dict[str, float], where: str = "") -> tuple[float, int]:
    got = dict(table_rows(url, f"SELECT entity_id, probability FROM {table} {where}"))
    assert set(got) == set(ref)
    return max(abs(got[k] - ref[k]) for k in ref), len(got)


def _dump(url: str) -> list[list[tuple[Any, ...]]]:
    return [sorted(table_rows(url, f"SELECT * FROM {t}"), key=repr) for t in ("churn_scores", "churn_scores_history", "churn_scores_rejects")]


def test_local_sqlite_scores_equal_device_rejects_named_rerun_changes_nothing(spark: Any, batch_files: dict[str, Any],
                                                                                tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ops.db'}?table=churn_scores"
    ref = reference_scores(batch_files["bundle"], batch_files["pubkey"], batch_files["bad_csv"])
    assert len(ref) == batch_files["n"] - len(BAD_CELLS)
    res = run_batch(_cfg(batch_files, url, run_id="nightly-1", batch_rows=500, partitions=3), stream=io.StringIO(), session=spark)
    assert (res.rows, res.rejects) == (len(ref), len(BAD_CELLS))
    dp, n = _max_dp(url, "churn_scores", ref)
    assert n == len(ref) and dp <= 1e-9, dp
    rejects = table_rows(url, "SELECT entity_id, reason FROM churn_scores_rejects WHERE run_id = 'nightly-1'")
    for _, col, value, field in BAD_CELLS:
        assert any(f"field {field!r}" in reason for _, reason in rejects), (field, rejects)
    assert ("", "field 'customerID': missing entity id") in rejects
    before = _dump(url)
    again = run_batch(_cfg(batch_files, url, run_id="nightly-1", batch_rows=700), stream=io.StringIO(), session=spark)
    assert (again.rows, again.rejects) == (res.rows, res.rejects)
    assert _dump(url) == before  # same run id: not one row added or changed
    history = table_rows(url, "SELECT run_id, count(*) FROM churn_scores_history GROUP BY run_id")
    assert history == [("nightly-1", len(ref))]


def test_local_postgres_parquet_newer_run_replaces_older_never(spark: Any, batch_files: dict[str, Any], postgres_url: str) -> None:
    url = f"{postgres_url}?table=pq_scores"
    ref = reference_scores(batch_files["bundle"], batch_files["pubkey"], batch_files["parquet"])
    assert len(ref) == batch_files["n"]
    out = io.StringIO()
    first = run_batch(_cfg(batch_files, url, input=batch_files["parquet"], run_id="pq-1"), stream=out, session=spark)
    assert first.rows == len(ref) and first.rejects == 0
    dp, _ = _max_dp(url, "pq_scores", ref)
    assert dp <= 1e-9, dp
    dp_hist, _ = _max_dp(url, "pq_scores_history", ref, "WHERE run_id = 'pq-1'")
    assert dp_hist <= 1e-9
    time.sleep(0.01)
    run_batch(_cfg(batch_files, url, input=batch_files["parquet"], run_id="pq-2"), stream=out, session=spark)
    assert set(r[0] for r in table_rows(url, "SELECT DISTINCT run_id FROM pq_scores")) == {"pq-2"}
    run_batch(_cfg(batch_files, url, input=batch_files["parquet"], run_id="pq-1"), stream=out, session=spark)  # an old run again
    assert set(r[0] for r in table_rows(url, "SELECT DISTINCT run_id FROM pq_scores")) == {"pq-2"}
    assert table_rows(url, "SELECT run_id, count(*) FROM pq_scores_history GROUP BY run_id ORDER BY run_id") == [
        ("pq-1", len(ref)), ("pq-2", len(ref))]
    runs = table_rows(url, "SELECT run_id, rows_scored, rows_rejected FROM pq_scores_runs ORDER BY run_id")
    assert runs == [("pq-1", len(ref), 0), ("pq-2", len(ref), 0)]


def test_run_id_of_another_bundle_is_refused(spark: Any, batch_files: dict[str, Any], tmp_path: Path, make_bundle: Any) -> None:
    from edgefleet.errors import InputError

    url = f"sqlite:///{tmp_path / 'ops.db'}?table=churn_scores"
    run_batch(_cfg(batch_files, url, input=batch_files["parquet"], run_id="r"), stream=io.StringIO(), session=spark)
    other = make_bundle(2)
    with pytest.raises(InputError, match="run 'r' scored churn v1"):
        run_batch(BatchConfig(bundle=str(other), pubkey=str(batch_files["pubkey"]), input=str(batch_files["parquet"]),
                              entity_column="customerID", output=url, run_id="r"), stream=io.StringIO(), session=spark)


def _count(url: str, sql: str) -> int:
    try:
        return int(table_rows(url, sql)[0][0])
    except Exception:  # noqa: BLE001 - the table may not exist yet while the job starts
        return 0


@pytest.mark.slow  # two CLI runs, each starting its own JVM (~60 s): make test-all
def test_sigkill_half_way_then_rerun_leaves_one_latest_row_per_entity(batch_files: dict[str, Any], postgres_url: str,
                                                                      tmp_path: Path) -> None:
    url = f"{postgres_url}?table=kill_scores"
    args = [str(batch_files["bundle"]), "--pubkey", str(batch_files["pubkey"]), "--input", str(batch_files["bad_csv"]),
            "--entity-column", "customerID", "--output", url, "--master", "local[1]", "--run-id", "night-7",
            "--batch-rows", "50", "--partitions", "12"]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    proc = subprocess.Popen([str(EDGEFLEET), "batch-score", *args], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    total = batch_files["n"] - len(BAD_CELLS)
    deadline = time.monotonic() + 180
    written = 0
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            written = _count(url, "SELECT count(*) FROM kill_scores_history WHERE run_id = 'night-7'")
            if written > 0:
                break
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver, its JVM and the Python workers
        proc.wait(timeout=30)
    killed_at = _count(url, "SELECT count(*) FROM kill_scores_history WHERE run_id = 'night-7'")
    assert 0 < killed_at < total, (killed_at, total, proc.stderr.read().decode()[-2000:] if proc.stderr else "")
    assert _count(url, "SELECT count(*) FROM kill_scores_runs WHERE run_id = 'night-7' AND finished_at IS NULL") == 1
    rerun = [a for a in args[:-4] if a not in ("--master", "local[1]")]
    again = cli("batch-score", *rerun, cwd=tmp_path)  # same run id; the default master local[*], batches and partitions
    assert again.returncode == 0, again.stderr
    assert f"scored {total:,} rows, rejected {len(BAD_CELLS)}" in again.stderr
    assert "first rejected: " in again.stderr and "None:" not in again.stderr  # which bad row comes first depends on task order
    assert any(f"field {f!r}" in again.stderr.split("first rejected: ")[1] for *_, f in BAD_CELLS)
    ref = reference_scores(batch_files["bundle"], batch_files["pubkey"], batch_files["bad_csv"])
    dp, n = _max_dp(url, "kill_scores", ref)
    assert n == total and dp <= 1e-9
    assert _count(url, "SELECT count(*) FROM kill_scores") == total  # one latest row per entity
    assert table_rows(url, "SELECT run_id, count(*), count(DISTINCT entity_id) FROM kill_scores_history GROUP BY run_id") == [
        ("night-7", total, total)]
    assert _count(url, "SELECT count(*) FROM kill_scores_rejects") == len(BAD_CELLS)
    assert _count(url, "SELECT count(*) FROM kill_scores_runs WHERE finished_at IS NOT NULL AND rows_scored = %d" % total) == 1


@pytest.mark.slow  # a master, a worker, the driver and an executor: four JVMs (~50-90 s here): make test-all
def test_standalone_cluster_into_postgres(batch_files: dict[str, Any], postgres_url: str, tmp_path: Path) -> None:
    cluster = SparkStandalone(tmp_path, cores=2).start()
    try:
        url = f"{postgres_url}?table=cluster_scores"
        got = cli("batch-score", str(batch_files["bundle"]), "--pubkey", str(batch_files["pubkey"]), "--input", str(batch_files["bad_csv"]),
                  "--entity-column", "customerID", "--output", url, "--master", cluster.url, "--run-id", "c1", "--partitions", "4",
                  cwd=tmp_path)
        assert got.returncode == 0, got.stderr
        assert f"on {cluster.url}" in got.stderr and f"rejected {len(BAD_CELLS)}" in got.stderr
        executors = list((tmp_path / "work").glob("app-*/*/stderr"))
        assert executors, "no executor ran on the standalone worker"
    finally:
        cluster.stop()
    assert all(p.poll() is not None for p in cluster.procs)
    ref = reference_scores(batch_files["bundle"], batch_files["pubkey"], batch_files["bad_csv"])
    dp, n = _max_dp(url, "cluster_scores", ref)
    assert n == len(ref) and dp <= 1e-9, dp


def test_parquet_output_keeps_scores_and_named_rejects_per_run(spark: Any, batch_files: dict[str, Any], tmp_path: Path) -> None:
    import pandas as pd

    out = tmp_path / "scores"
    res = run_batch(_cfg(batch_files, f"parquet://{out}", run_id="pq-night"), stream=io.StringIO(), session=spark)
    again = run_batch(_cfg(batch_files, f"parquet://{out}", run_id="pq-night"), stream=io.StringIO(), session=spark)
    assert (res.rows, res.rejects) == (again.rows, again.rejects) == (batch_files["n"] - len(BAD_CELLS), len(BAD_CELLS))
    frame = pd.read_parquet(out / "run_id=pq-night")  # overwritten, not appended, by the same run id
    assert len(frame) == batch_files["n"]
    ref = reference_scores(batch_files["bundle"], batch_files["pubkey"], batch_files["bad_csv"])
    good = frame[frame["error"].isna()]
    assert max(abs(p - ref[e]) for e, p in zip(good["entity_id"], good["probability"])) <= 1e-9
    assert sorted(frame.loc[frame["error"].notna(), "error"].str.extract(r"field '(\w+)'")[0]) == sorted(f for *_, f in BAD_CELLS)
