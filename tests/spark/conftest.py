"""Spark batch-scoring fixtures: a signed churn bundle, customers as CSV (with bad rows) and Parquet, PostgreSQL.

The reference scores come from the device runtime itself: ``Scorer.score_many`` on the records
``edgefleet score`` would read from the same file (``RecordFile`` + the file rule).
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from edgefleet.bundle_format import pack
from tests.runtimes.conftest import lr_result, make_bundle  # noqa: F401 - the compiled churn LR (onnx), re-signed versions
from tests.support.postgres import postgres_url  # noqa: F401 - session PostgreSQL

ROOT = Path(__file__).resolve().parents[2]
EDGEFLEET = ROOT / ".venv" / "bin" / "edgefleet"
if not EDGEFLEET.exists():
    EDGEFLEET = Path(sys.executable).with_name("edgefleet")

# (row index in the CSV's data rows, column, bad value, the field named in the reject)
BAD_CELLS = [(3, "tenure", "abc", "tenure"), (10, "customerID", "", "customerID"), (17, "MonthlyCharges", "12,5", "MonthlyCharges"),
             (25, "SeniorCitizen", "maybe", "SeniorCitizen")]


@pytest.fixture(scope="session")
def batch_files(lr_result: Any, keypair: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from edgefleet_cli.samples.telco_churn import make_telco_churn

    d = tmp_path_factory.mktemp("batch")
    bundle = d / "churn-v1.tar"
    bundle.write_bytes(pack(lr_result.files))
    df = make_telco_churn(3000, seed=21, missing_rate=0.03).drop(columns=["Churn"])
    good_csv = d / "customers.csv"
    df.to_csv(good_csv, index=False)
    df.to_parquet(d / "customers.parquet", index=False)
    rows = list(csv.reader(good_csv.open(newline="")))
    header = rows[0]
    for i, col, value, _ in BAD_CELLS:
        rows[1 + i][header.index(col)] = value
    bad_csv = d / "customers-bad.csv"
    with bad_csv.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return {"dir": d, "bundle": bundle, "pubkey": keypair["public_path"], "csv": good_csv, "bad_csv": bad_csv,
            "parquet": d / "customers.parquet", "n": len(df)}


def reference_scores(bundle: Path, pubkey: Path, path: Path, entity: str = "customerID") -> dict[str, float]:
    """entity id -> the device runtime's probability, for every row edgefleet score would accept."""
    from edgefleet.encoding import FileRule
    from edgefleet.errors import InputError
    from edgefleet_cli.data import RecordFile
    from runtimes.python import Scorer

    scorer = Scorer.from_bundle(bundle, pubkey)
    rule = FileRule(scorer.fields)
    out: dict[str, float] = {}
    for chunk in RecordFile(str(path)).chunks():
        for _, raw in chunk.rows:
            assert isinstance(raw, dict)
            ent = raw.get(entity)
            if ent is None or str(ent) == "" or ent != ent:
                continue
            try:
                rec = rule(raw)
                p = scorer.score_many([rec])[0]
            except InputError:
                continue
            out[str(ent)] = p.probability
    return out


def table_rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    from runtimes.spark.sinks import DatabaseSink, parse_output

    sink = DatabaseSink(parse_output(url))
    try:
        return [tuple(r) for r in sink.fetchall(sql)]
    finally:
        sink.close()


def cli(*args: str, cwd: Path, timeout: float = 240.0) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd), **{k: v for k, v in os.environ.items() if k.startswith("JAVA")}}
    return subprocess.run([str(EDGEFLEET), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


class SparkStandalone:
    """A Spark standalone master and one worker from the pyspark install, on 127.0.0.1 with free ports; stopped by PID."""

    def __init__(self, workdir: Path, cores: int = 2) -> None:
        import pyspark

        from tests.support.postgres import free_port

        self.home = Path(pyspark.__file__).parent
        self.workdir = workdir
        self.port, self.web, self.wport, self.wweb = free_port(), free_port(), free_port(), free_port()
        self.cores = cores
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "SPARK_HOME": str(self.home), "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
               "SPARK_WORKER_DIR": str(self.workdir / "work"), "SPARK_LOG_DIR": str(self.workdir)}
        log = (self.workdir / f"{name}.log").open("wb")
        p = subprocess.Popen([str(self.home / "bin" / "spark-class"), *args], env=env, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
        self.procs.append(p)
        return p

    def start(self) -> "SparkStandalone":
        self._spawn("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(self.port),
                    "--webui-port", str(self.web))
        self._wait_log("master", "I have been elected leader")
        self._spawn("worker", "org.apache.spark.deploy.worker.Worker", self.url, "--host", "127.0.0.1", "--port", str(self.wport),
                    "--webui-port", str(self.wweb), "--cores", str(self.cores), "--memory", "1g", "--work-dir", str(self.workdir / "work"))
        self._wait_log("worker", "Successfully registered with master")
        return self

    def _wait_log(self, name: str, text: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        log = self.workdir / f"{name}.log"
        while time.monotonic() < deadline:
            if log.exists() and text in log.read_text(errors="replace"):
                return
            if any(p.poll() is not None for p in self.procs):
                break
            time.sleep(0.3)
        raise RuntimeError(f"spark {name} did not start: {log.read_text(errors='replace')[-2000:] if log.exists() else 'no log'}")

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)


@pytest.fixture()
def spark_cluster(tmp_path: Path) -> Iterator[SparkStandalone]:
    cluster = SparkStandalone(tmp_path).start()
    try:
        yield cluster
    finally:
        cluster.stop()
