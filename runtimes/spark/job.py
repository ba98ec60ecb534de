"""The batch-scoring job's driver: verify, start Spark, score with ``mapInPandas``, report.

    result = run_batch(BatchConfig(bundle="churn-v3.tar", pubkey="public.pem", input="customers.parquet",
                                   entity_column="customerID", output="postgresql://.../ops?table=churn_scores"))

Steps: verify the bundle here (a bad one fails before any worker starts), record the run in the
output's runs table (a known run id keeps its first ``scored_at``), start a SparkSession
(``local[*]`` by default: Spark's embedded engine, which needs only the JVM; or ``spark://host:port``),
read the input (Parquet or CSV, a file, folder or glob; CSV columns are read as text and parsed
by the device file rule), then ``mapInPandas(ScoreTask)``: each Python worker verifies and loads
one Scorer, scores Arrow batches of ``batch_rows`` rows and writes each batch to the database in
one transaction. A progress line (rows scored, rows/s, tasks done, ETA) is printed every few
seconds while the job runs.

Spark's workers run ``PYSPARK_PYTHON``: this interpreter (``sys.executable``), so they have
pyarrow, onnxruntime and edgefleet; on a cluster every worker host must have the same venv path.
"""

from __future__ import annotations

import datetime as dt
import glob
import hashlib
import io
import os
import sys
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

from edgefleet.errors import InputError
from runtimes.python.scorer import Scorer
from runtimes.spark.sinks import DatabaseSink, parse_output
from runtimes.spark.worker import COUNT_SCHEMA, ROWS_SCHEMA, RunInfo, ScoreTask

DEFAULT_BATCH_ROWS = 10_000  # Arrow batch: ORT on 1 thread amortizes its per-call cost by ~10k rows (field notes)
PROGRESS_EVERY = 5.0  # seconds between progress lines


@dataclass
class BatchConfig:
    bundle: str
    pubkey: str
    input: str
    entity_column: str
    output: str
    master: str = "local[*]"
    run_id: str | None = None
    batch_rows: int = DEFAULT_BATCH_ROWS
    partitions: int | None = None  # split the input into this many tasks (default: Spark's file splits)
    spark_conf: dict[str, str] = field(default_factory=dict)


@dataclass
class BatchResult:
    run_id: str
    rows: int
    rejects: int
    seconds: float  # the job, Spark start-up excluded
    startup_seconds: float
    output: str
    first_reject: str | None
    worker_pids: set[int]
    worker_peak_rss_kb: int = 0  # the largest Python worker's peak RSS (database outputs)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def spark_env() -> dict[str, str]:
    return {"PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1",
            "PYARROW_IGNORE_TIMEZONE": "1", "PYTHONWARNINGS": "ignore::FutureWarning"}


# Spark's JVM logging: errors only, one line each (Spark's default is WARN with a banner and a progress bar).
LOG4J = """rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = spark: %p %c{1}: %m%n%ex
"""


def _log4j_file() -> str:
    import tempfile

    path = Path(tempfile.gettempdir()) / f"edgefleet-spark-log4j2-{hashlib.sha256(LOG4J.encode()).hexdigest()[:12]}.properties"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(LOG4J)
        os.replace(tmp, path)
    return str(path)


def start_session(master: str, conf: dict[str, str] | None = None, app: str = "edgefleet-batch-score") -> Any:
    """A SparkSession bound to 127.0.0.1 whose Python workers run this interpreter."""
    for k, v in spark_env().items():
        os.environ.setdefault(k, v)
    os.environ["PYSPARK_PYTHON"] = sys.executable
    import warnings

    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")  # pandas 3: see the README
    from pyspark.sql import SparkSession

    log4j = f"-Dlog4j.configurationFile=file:{_log4j_file()}"
    b = (SparkSession.builder.master(master).appName(app)
         .config("spark.ui.enabled", "false")
         .config("spark.ui.showConsoleProgress", "false")
         .config("spark.driver.extraJavaOptions", log4j)
         .config("spark.executor.extraJavaOptions", log4j)
         .config("spark.executorEnv.PYTHONWARNINGS", "ignore::FutureWarning")
         .config("spark.driver.host", "127.0.0.1")
         .config("spark.driver.bindAddress", "127.0.0.1")
         .config("spark.sql.execution.arrow.pyspark.enabled", "true")
         .config("spark.python.worker.reuse", "true"))
    for k, v in (conf or {}).items():
        b = b.config(k, v)
    spark = b.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def bundle_bytes(path: str) -> tuple[bytes, str]:
    """(the bundle as a .tar in memory, its sha256): the archive's own bytes, or a folder packed as a tar."""
    p = Path(path)
    if p.is_dir():
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for f in sorted(q for q in p.rglob("*") if q.is_file()):
                info = tar.gettarinfo(str(f), arcname=str(f.relative_to(p)))
                info.mtime = 0
                with f.open("rb") as fh:
                    tar.addfile(info, fh)
        data = buf.getvalue()
    else:
        data = p.read_bytes()
    return data, hashlib.sha256(data).hexdigest()


def input_paths(text: str) -> tuple[str, list[str]]:
    """(format, paths) for a file, folder or glob of Parquet or CSV."""
    if "://" in text and not text.startswith("file://"):
        raise InputError("--input", f"{text!r}: reading a database table is not supported yet; export it to Parquet or CSV")
    text = os.path.abspath(text[len("file://"):] if text.startswith("file://") else text)  # a cluster worker's cwd is not ours
    paths = sorted(glob.glob(text)) if any(c in text for c in "*?[") else [text]
    if not paths or not all(os.path.exists(p) for p in paths):
        raise InputError("--input", f"{text}: no such file or folder")
    names = [str(q) for p in paths for q in (Path(p).rglob("*") if Path(p).is_dir() else [Path(p)]) if Path(q).is_file()]
    kinds = {Path(n).suffix.lower() for n in names if not Path(n).name.startswith(("_", "."))}
    if kinds <= {".parquet"} and kinds:
        return "parquet", paths
    if kinds <= {".csv"} and kinds:
        return "csv", paths
    raise InputError("--input", f"{text}: expected .parquet or .csv files, found {', '.join(sorted(kinds)) or 'none'}")


def read_input(spark: Any, text: str) -> Any:
    fmt, paths = input_paths(text)
    if fmt == "parquet":
        return spark.read.parquet(*paths)
    # text columns, as edgefleet score reads CSV: numbers are parsed by the device's file rule, empty = missing
    # and an empty cell stays "" (not null), as in edgefleet score: the file rule decides what it means for each field
    return (spark.read.option("header", "true").option("inferSchema", "false").option("mode", "PERMISSIVE")
            .option("nullValue", "\u0000edgefleet-no-null").option("emptyValue", "").csv(paths))


class _Progress:
    """A driver thread: rows scored (accumulators: counted as tasks finish), rows/s, tasks done, ETA."""

    def __init__(self, spark: Any, rows_acc: Any, rejects_acc: Any, stream: TextIO) -> None:
        self.spark, self.rows_acc, self.rejects_acc, self.stream = spark, rows_acc, rejects_acc, stream
        self.stop = threading.Event()
        self.started = time.perf_counter()
        self.thread = threading.Thread(target=self._loop, name="batch-score-progress", daemon=True)

    def _tasks(self) -> tuple[int, int]:
        tracker = self.spark.sparkContext.statusTracker()
        done = total = 0
        for sid in tracker.getActiveStageIds():
            info = tracker.getStageInfo(sid)
            if info is not None:
                done += info.numCompletedTasks
                total += info.numTasks
        return done, total

    def _loop(self) -> None:
        while not self.stop.wait(PROGRESS_EVERY):
            try:
                done, total = self._tasks()
                rows, rej = int(self.rows_acc.value), int(self.rejects_acc.value)
            except Exception:  # noqa: BLE001 - the session is stopping; progress is best effort
                return
            secs = time.perf_counter() - self.started
            eta = f"ETA {secs * (total - done) / done:.0f}s" if done and total else "ETA unknown until the first task ends"
            print(f"batch-score: {rows:,} rows scored, {rej:,} rejected, {rows / max(secs, 1e-9):,.0f} rows/s, "
                  f"tasks {done}/{total}, {eta}", file=self.stream, flush=True)

    def __enter__(self) -> "_Progress":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join(timeout=2)


def default_run_id(model: str, now: dt.datetime) -> str:
    return f"{model}-{now.strftime('%Y%m%dT%H%M%SZ')}"


def run_batch(cfg: BatchConfig, stream: TextIO = sys.stderr, session: Any = None,
              on_started: Callable[[Any], None] | None = None) -> BatchResult:
    """Run one batch. ``session``: an existing SparkSession to use (and leave running), else one is started for
    ``cfg.master`` and stopped at the end. ``on_started(spark)`` is called once the session is up."""
    out = parse_output(cfg.output)
    if cfg.batch_rows < 1:
        raise InputError("--batch-rows", "must be at least 1")
    input_paths(cfg.input)  # a missing or unknown input fails before the JVM starts
    scorer = Scorer.from_bundle(cfg.bundle, cfg.pubkey)  # verified here first: nothing reaches a worker otherwise
    data, sha = bundle_bytes(cfg.bundle)
    pem = Path(cfg.pubkey).read_bytes()
    now = dt.datetime.now(dt.timezone.utc)
    run_id = cfg.run_id or default_run_id(scorer.name, now)
    sink: DatabaseSink | None = DatabaseSink(out) if out.kind != "parquet" else None  # an unreachable database fails before Spark

    t0 = time.perf_counter()
    conf = {"spark.sql.execution.arrow.maxRecordsPerBatch": str(cfg.batch_rows), **cfg.spark_conf}
    spark = session if session is not None else start_session(cfg.master, conf)
    if session is not None:
        for k, v in conf.items():
            spark.conf.set(k, v)
    if on_started is not None:
        on_started(spark)
    try:
        df = read_input(spark, cfg.input)
        if cfg.entity_column not in df.columns:
            shown = ", ".join(df.columns[:8]) + (" ..." if len(df.columns) > 8 else "")
            raise InputError("--entity-column", f"the input has no column {cfg.entity_column!r} (its columns: {shown})")
        missing = [f["name"] for f in scorer.fields if f["name"] not in df.columns]
        if missing:
            raise InputError("--input", f"the input lacks the model's input column(s) {', '.join(missing)}")
        keep = [cfg.entity_column] + [f["name"] for f in scorer.fields if f["name"] != cfg.entity_column]
        df = df.select(*keep)
        scored_at = now
        if sink is not None:  # the run is recorded once its input is known to fit the model
            sink.create_tables()
            scored_at = sink.start_run(run_id, scorer.name, scorer.version, sha, now, cfg.input, cfg.master)
        run = RunInfo(run_id, scorer.name, scorer.version, sha, scored_at)
        sc = spark.sparkContext
        if cfg.partitions:
            df = df.repartition(cfg.partitions)
        elif df.rdd.getNumPartitions() < sc.defaultParallelism:  # e.g. one small file: give every core slot a task
            df = df.repartition(sc.defaultParallelism)
        startup = time.perf_counter() - t0
        t1 = time.perf_counter()
        rows_acc, rejects_acc = sc.accumulator(0), sc.accumulator(0)
        task = ScoreTask(sc.broadcast(data), pem, cfg.entity_column, run, out, rows_acc, rejects_acc)
        with _Progress(spark, rows_acc, rejects_acc, stream):
            if out.kind == "parquet":
                scored = df.mapInPandas(task, ROWS_SCHEMA)
                dest = os.path.join(out.path, f"run_id={run_id}")
                scored.drop("run_id").write.mode("overwrite").parquet(dest)
                back = spark.read.parquet(dest)
                rows = back.filter("error IS NULL").count()
                rejected = back.filter("error IS NOT NULL").count()
                first = back.filter("error IS NOT NULL").select("entity_id", "error").limit(1).collect()
                first_reject = f"{first[0][0]}: {first[0][1]}" if first else None
                pids: set[int] = set()
                peak = 0
            else:
                counts = df.mapInPandas(task, COUNT_SCHEMA).collect()
                rows = sum(int(r["rows"]) for r in counts)
                rejected = sum(int(r["rejects"]) for r in counts)
                first_reject = next((r["first_reject"] for r in counts if r["first_reject"]), None)
                pids = {int(r["pid"]) for r in counts}
                peak = max((int(r["peak_rss_kb"]) for r in counts), default=0)
        secs = time.perf_counter() - t1
    finally:
        if session is None:
            spark.stop()
    if sink is not None:
        sink.finish_run(run_id, rows, rejected, secs, dt.datetime.now(dt.timezone.utc))
        sink.close()
    return BatchResult(run_id, rows, rejected, secs, startup, out.describe(), first_reject, pids, peak)
