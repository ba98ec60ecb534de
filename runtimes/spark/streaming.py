"""Online scoring of a Kafka topic on Spark Structured Streaming into the operational database.

    result = run_stream(StreamConfig(bootstrap="127.0.0.1:9092", topic="customer-events", bundle="churn.tar",
                                     pubkey="public.pem", output="postgresql://.../ops?table=churn_scores",
                                     checkpoint="ckpt/"))

Each event is one Kafka message whose value is a JSON object: the model's input fields plus the
entity column (``customerID``). Along the data:

- **Source.** Spark's ``format("kafka")`` when its JVM connector is on the classpath, else the
  Python source of :mod:`runtimes.spark.streaming_kafka` (``source`` says which ran): on a
  ``local`` master its driver reader (each message read once, by the probe that plans the batch),
  on a cluster its partitioned reader (a task per offset range).
- **Scoring.** ``foreachBatch``: the driver picks the model for this micro-batch (see *hot swap*).
  With the driver reader the rows are on the driver already: ``toArrow()`` and
  ``StreamScoreTask.write`` there (no Python worker hop, the fixed cost of a micro-batch);
  otherwise ``mapInPandas(StreamScoreTask)`` on the workers. Either way one ``Scorer`` per bundle
  and process, verified and loaded by ``runtimes.spark.worker.scorer_for`` (the batch scorer's
  cache), and the batch scorer's ``DatabaseSink`` (one transaction per batch).
- **Timings.** After each micro-batch with input, one line gives its phases from
  ``StreamingQueryProgress.durationMs`` (latestOffset, walCommit, addBatch, commitOffsets, ...).
- **Idempotence by (entity, event offset).** A score's ``run_id`` is ``TOPIC/PARTITION/OFFSET``
  (offset zero-padded) and its ``scored_at`` is the event's Kafka timestamp: history is keyed by
  ``(run_id, model, entity_id)`` and inserts ``ON CONFLICT DO NOTHING``; ``latest`` is replaced only
  by a strictly newer ``(scored_at, run_id)``, so it holds each customer's last event (events of
  one customer share a partition when keyed by customer) however often a batch is replayed.
- **Exactly-once effect.** Spark writes a batch's offset range to the checkpoint before running
  it; a job killed mid-batch replays that range on restart and the idempotent sink absorbs the
  rows already written. Nothing is committed to Kafka.
- **Rejects.** A message that is not a JSON object, lacks the entity id or fails the model's
  input schema goes to the rejects table with ``field 'NAME': reason`` and the stream goes on.
- **Hot swap.** With ``device_credential`` the job runs the device agent (it *is* a fleet device):
  the fleet server's assignments install into its model store as on any device, and at each
  micro-batch boundary the driver broadcasts the store's active bundle if it changed. Every row
  carries the ``model_version`` and ``bundle_sha256`` that produced it.
- **Scores topic** (optional): each score is also produced to a Kafka topic, after the database
  write. That copy is at-least-once (a replayed batch produces again); the table is the record.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, TextIO

from edgefleet.encoding import FileRule
from edgefleet.errors import InputError
from runtimes.python.errors import ScoringInputError
from runtimes.python.scorer import Scorer
from runtimes.spark.job import bundle_bytes, start_session
from runtimes.spark.sinks import DatabaseSink, Output, parse_output
from runtimes.spark.worker import COUNT_SCHEMA, scorer_for, sink_for

DRIVER_SOURCE = "python data source, read on the driver"
ROW_KEY_DIGITS = 19  # offsets zero-padded so the run id sorts as the offset does


def event_id(topic: str, partition: int, offset: int) -> str:
    return f"{topic}/{partition}/{offset:0{ROW_KEY_DIGITS}d}"


def event_time(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000.0, dt.timezone.utc)


@dataclass(frozen=True)
class ModelRef:
    """The model a micro-batch is scored with: its bytes travel as a broadcast."""

    name: str
    version: int
    sha256: str
    broadcast: Any


def _column(frame: Any, name: str) -> list[Any]:
    """A column as Python values: a pandas frame's (``mapInPandas``) or a plain {name: list} (the driver's Arrow batch)."""
    col = frame[name]
    return col if isinstance(col, list) else col.tolist()


def score_events(scorer: Scorer, rule: FileRule, frame: Any, topic: str, entity_column: str, ref: ModelRef
                 ) -> tuple[list[tuple[Any, ...]], list[tuple[str, str, str, str]], list[tuple[str, int, str, float, str | None]]]:
    """(score rows in SCORE_COLUMNS order, reject rows, [(entity, offset, event id, probability, label)]) for one Arrow batch."""
    rejects: list[tuple[str, str, str, str]] = []
    good: list[tuple[str, str, dt.datetime, int, dict[str, Any]]] = []
    for part, off, ts, key, value in zip(*(_column(frame, c) for c in ("partition", "offset", "timestamp", "key", "value"))):
        eid = event_id(topic, int(part), int(off))
        fallback_entity = "" if key is None else str(key)
        try:
            raw = json.loads(value) if value is not None else None
        except json.JSONDecodeError as exc:
            rejects.append((eid, ref.name, fallback_entity, f"field 'value': not JSON ({exc.msg} at character {exc.pos})"))
            continue
        except (ValueError, RecursionError) as exc:
            rejects.append((eid, ref.name, fallback_entity, f"field 'value': not JSON ({exc})"))
            continue
        if not isinstance(raw, dict):
            rejects.append((eid, ref.name, fallback_entity, f"field 'value': expected a JSON object, got {type(raw).__name__}"))
            continue
        ent = raw.get(entity_column)
        if ent is None or str(ent).strip() == "":
            rejects.append((eid, ref.name, fallback_entity, f"field {entity_column!r}: missing entity id"))
            continue
        ent = str(ent)
        try:
            good.append((ent, eid, event_time(int(ts)), int(off), rule(raw)))
        except InputError as exc:
            rejects.append((eid, ref.name, ent, f"field {exc.field!r}: {exc.reason}"))
    recs = [g[4] for g in good]
    preds: list[Any]
    try:
        preds = scorer.score_many(recs) if recs else []
    except ScoringInputError:  # one record breaks the schema: one by one, to name it and keep the rest
        preds, kept = [], []
        for g in good:
            try:
                preds.append(scorer.score(g[4]))
                kept.append(g)
            except ScoringInputError as exc:
                rejects.append((g[1], ref.name, g[0], f"field {exc.field!r}: {exc.reason}"))
        good = kept
    rows: list[tuple[Any, ...]] = []
    out: list[tuple[str, int, str, float, str | None]] = []
    for (ent, eid, when, off, _), p in zip(good, preds):
        label = None if p.label is None else str(p.label)
        rows.append((eid, ent, ref.name, ref.version, ref.sha256, float(p.probability), label, when))
        out.append((ent, off, eid, float(p.probability), label))
    # newest first: the shared sink gives `latest` the first row of a batch per (model, entity) (PostgreSQL DISTINCT ON,
    # SQLite in order under the strict "newer" test), and one micro-batch often holds several events of one customer
    rows.sort(key=lambda r: (r[7], r[0]), reverse=True)
    return rows, rejects, out


_PRODUCERS: dict[str, Any] = {}


@dataclass(frozen=True)
class StreamScoreTask:
    """``mapInPandas`` over one micro-batch: score, write (one transaction per Arrow batch), yield counts."""

    ref: ModelRef
    pubkey_pem: bytes
    topic: str
    entity_column: str
    output: Output
    bootstrap: str = ""
    scores_topic: str | None = None

    def __call__(self, batches: Iterator[Any]) -> Iterator[Any]:
        import pandas as pd

        for frame in batches:
            c = self.write(frame)
            yield pd.DataFrame({k: [v] for k, v in c.items()})

    def write(self, frame: Any) -> dict[str, Any]:
        """Score one batch (a pandas frame or {column: list}), write it in one transaction, publish; its COUNT_SCHEMA row."""
        scorer, rule = scorer_for(self.ref.sha256, self.ref.broadcast, self.pubkey_pem)  # verified once per process
        rows, rejects, scored = score_events(scorer, rule, frame, self.topic, self.entity_column, self.ref)
        sink_for(self.output).write(rows, rejects)
        if self.scores_topic and scored:
            self._publish(scored)
        return {"rows": len(rows), "rejects": len(rejects), "pid": os.getpid(), "peak_rss_kb": 0,
                "first_reject": f"{rejects[0][2]}: {rejects[0][3]}" if rejects else None}

    def _publish(self, scored: list[tuple[str, int, str, float, str | None]]) -> None:
        from confluent_kafka import Producer

        from runtimes.spark.streaming_kafka import client_conf

        topic = str(self.scores_topic)
        prod = _PRODUCERS.get(self.bootstrap)
        if prod is None:
            prod = _PRODUCERS[self.bootstrap] = Producer(client_conf(self.bootstrap, **{"linger.ms": 5}))
        for ent, _off, eid, prob, label in scored:
            prod.produce(topic, key=ent.encode(), value=json.dumps(
                {"entity_id": ent, "event": eid, "model": self.ref.name, "model_version": self.ref.version,
                 "bundle_sha256": self.ref.sha256, "probability": prob, "label": label}).encode())
        prod.flush(30)


class ModelFollower:
    """The model for the next micro-batch: the ``--bundle`` given, or the fleet's assignment via the device agent."""

    def __init__(self, spark: Any, pubkey: str, bundle: str | None, credential: str | None, data_dir: str | None,
                 poll_seconds: float = 2.0) -> None:
        self.spark, self.pubkey = spark, pubkey
        self._refs: dict[str, ModelRef] = {}
        self.agent: Any = None
        self._thread: threading.Thread | None = None
        self._static: ModelRef | None = self._ref_for(bundle) if bundle else None
        if credential:
            from runtimes.python.agent import Agent, AgentConfig

            cfg = AgentConfig.from_credential(credential, data_dir=data_dir or "stream-device", poll_seconds=poll_seconds,
                                              status_seconds=10.0, tick_seconds=0.2)
            self.agent = Agent(cfg)
            self._thread = threading.Thread(target=self.agent.run, kwargs={"install_signal_handlers": False},
                                            name="stream-score-agent", daemon=True)
            self._thread.start()

    def _ref_for(self, path: str) -> ModelRef:
        data, sha = bundle_bytes(path)
        ref = self._refs.get(sha)
        if ref is None:
            scorer = Scorer.from_bundle(path, self.pubkey)  # verified on the driver before any worker sees it
            ref = self._refs[sha] = ModelRef(scorer.name, scorer.version, sha, self.spark.sparkContext.broadcast(data))
        return ref

    def current(self) -> ModelRef | None:
        if self.agent is not None:
            slot = self.agent.store.state().get("active")
            if isinstance(slot, str) and (self.agent.store.slots / slot).is_dir():
                return self._ref_for(str(self.agent.store.slots / slot))
        return self._static

    def stop(self) -> None:
        if self.agent is not None:
            self.agent.stop()
            if self._thread is not None:
                self._thread.join(timeout=10)


@dataclass
class StreamConfig:
    bootstrap: str
    topic: str
    pubkey: str
    output: str
    checkpoint: str
    bundle: str | None = None
    entity_column: str = "customerID"
    trigger: str = "1 second"
    scores_topic: str | None = None
    source: str = "auto"  # auto | python | jvm
    reader: str = "auto"  # the Python source's reader: auto (driver on a local master) | driver | partitioned
    master: str = "local[2]"
    until_idle: float | None = None  # stop after this many seconds without new events (None: run until stopped)
    max_offsets_per_trigger: int = 0
    device_credential: str | None = None
    device_data_dir: str | None = None
    spark_conf: dict[str, str] = field(default_factory=dict)


@dataclass
class StreamResult:
    batches: int = 0
    rows: int = 0
    rejects: int = 0
    source: str = ""
    versions: dict[int, int] = field(default_factory=dict)  # model version -> rows scored with it
    startup_seconds: float = 0.0


def _source_df(spark: Any, cfg: StreamConfig) -> tuple[Any, str]:
    from runtimes.spark.streaming_kafka import DRIVER_FORMAT, FORMAT, KafkaDriverSource, KafkaSource, kafka_jvm_available

    use_jvm = cfg.source == "jvm" or (cfg.source == "auto" and kafka_jvm_available(spark))
    if cfg.source == "jvm" and not kafka_jvm_available(spark):
        raise InputError("--source", "jvm: Spark's Kafka connector (spark-sql-kafka-0-10) is not on the classpath; use --source python")
    if use_jvm:
        r = (spark.readStream.format("kafka").option("kafka.bootstrap.servers", cfg.bootstrap).option("subscribe", cfg.topic)
             .option("startingOffsets", "earliest").option("failOnDataLoss", "true"))
        if cfg.max_offsets_per_trigger:
            r = r.option("maxOffsetsPerTrigger", str(cfg.max_offsets_per_trigger))
        df = r.load().selectExpr("partition", "offset", "CAST(unix_millis(timestamp) AS LONG) AS timestamp",
                                 "CAST(key AS STRING) AS key", "CAST(value AS STRING) AS value")
        return df, "format(kafka) (Spark's JVM connector)"
    # on one machine the driver reads as fast as a task, once instead of twice
    driver = cfg.reader == "driver" or (cfg.reader == "auto" and cfg.master.startswith("local"))
    spark.dataSource.register(KafkaDriverSource if driver else KafkaSource)
    r = spark.readStream.format(DRIVER_FORMAT if driver else FORMAT).option("bootstrap", cfg.bootstrap).option("topic", cfg.topic)
    if cfg.max_offsets_per_trigger:
        r = r.option("maxOffsetsPerTrigger", str(cfg.max_offsets_per_trigger))
    if driver:
        return r.load(), f"{DRIVER_SOURCE} (runtimes.spark.streaming_kafka over confluent-kafka; read once, scored on the driver)"
    return r.load(), "python data source, partitioned (runtimes.spark.streaming_kafka over confluent-kafka; a task per offset range)"


PHASES = ("latestOffset", "walCommit", "getBatch", "queryPlanning", "addBatch", "commitOffsets")


def _print_phases(query: Any, timed: list[int], stream: TextIO) -> None:
    """One line per finished micro-batch that had input: where its time went (StreamingQueryProgress.durationMs, ms)."""
    for prog in query.recentProgress:
        if prog.batchId <= timed[0]:
            continue
        timed[0] = prog.batchId
        if prog.numInputRows:
            d = prog.durationMs
            print(f"stream-score: batch {prog.batchId} timings: {d.get('triggerExecution', 0)} ms in all ("
                  + ", ".join(f"{k} {d[k]}" for k in PHASES if k in d) + ")", file=stream, flush=True)


def run_stream(cfg: StreamConfig, stream: TextIO = sys.stderr, session: Any = None, stop: threading.Event | None = None) -> StreamResult:
    """Run until ``stop`` is set, SIGTERM/SIGINT (main thread only), or ``until_idle`` seconds pass with no new event."""
    out = parse_output(cfg.output)
    if out.kind == "parquet":
        raise InputError("--output", "stream-score writes to a database (postgresql:// or sqlite://), not Parquet")
    if not cfg.bundle and not cfg.device_credential:
        raise InputError("--bundle", "give a bundle, or --device-credential to follow the fleet's assignment")
    pem = Path(cfg.pubkey).read_bytes()
    sink = DatabaseSink(out)  # an unreachable database fails before Spark starts
    sink.create_tables()
    sink.close()
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    t0 = time.perf_counter()
    spark = session if session is not None else start_session(cfg.master, cfg.spark_conf, app="edgefleet-stream-score")
    res = StreamResult()
    follower = ModelFollower(spark, cfg.pubkey, cfg.bundle, cfg.device_credential, cfg.device_data_dir)
    last_event = [time.monotonic()]
    try:
        df, res.source = _source_df(spark, cfg)
        driver_read = res.source.startswith(DRIVER_SOURCE)
        print(f"stream-score: source {res.source}; topic {cfg.topic} at {cfg.bootstrap}; output {out.describe()}; "
              f"checkpoint {cfg.checkpoint}", file=stream, flush=True)

        def each_batch(batch_df: Any, batch_id: int) -> None:
            ref = follower.current()
            while ref is None and not stop.is_set():  # following a fleet that has not assigned a model yet
                time.sleep(0.5)
                ref = follower.current()
            if ref is None:
                raise InputError("--device-credential", "no model assigned yet; the batch is left for the next run")
            t = time.perf_counter()
            task = StreamScoreTask(ref, pem, cfg.topic, cfg.entity_column, out, cfg.bootstrap, cfg.scores_topic)
            fetch = ""
            if driver_read:  # the rows came through the driver already: score them here, no Python worker hop
                tbl = batch_df.toArrow()
                fetch = f" (rows to the driver {time.perf_counter() - t:.2f}s)"
                counts = [task.write({c: tbl.column(c).to_pylist() for c in tbl.column_names})] if tbl.num_rows else []
            else:
                counts = [r.asDict() for r in batch_df.mapInPandas(task, COUNT_SCHEMA).collect()]
            rows = sum(int(r["rows"]) for r in counts)
            rej = sum(int(r["rejects"]) for r in counts)
            res.batches += 1
            res.rows += rows
            res.rejects += rej
            res.versions[ref.version] = res.versions.get(ref.version, 0) + rows
            if rows or rej:
                last_event[0] = time.monotonic()
                first = next((r["first_reject"] for r in counts if r["first_reject"]), None)
                print(f"stream-score: batch {batch_id}: {rows:,} scored, {rej:,} rejected with {ref.name} v{ref.version} in "
                      f"{time.perf_counter() - t:.2f}s{fetch}" + (f"; first rejected: {first}" if first else ""), file=stream, flush=True)

        query = (df.writeStream.foreachBatch(each_batch).option("checkpointLocation", cfg.checkpoint)
                 .trigger(processingTime=cfg.trigger).start())
        res.startup_seconds = time.perf_counter() - t0
        last_event[0] = time.monotonic()
        timed = [-1]
        while not stop.is_set():
            if query.awaitTermination(0.5):
                break
            _print_phases(query, timed, stream)
            if cfg.until_idle is not None and time.monotonic() - last_event[0] > cfg.until_idle:
                st = query.status  # never while a trigger runs: a restart's replayed first batch can outlast the idle time
                if not st["isDataAvailable"] and not st["isTriggerActive"]:
                    break
        query.stop()
        exc = query.exception()
        if exc is not None:
            raise RuntimeError(f"stream-score: the streaming query failed: {' '.join(str(exc).split())[:500]}")
    finally:
        follower.stop()
        if session is None:
            spark.stop()
    print(f"stream-score: stopped after {res.batches} batches: {res.rows:,} scored, {res.rejects:,} rejected; rows by version "
          f"{dict(sorted(res.versions.items()))}", file=stream, flush=True)
    return res
