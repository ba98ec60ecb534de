"""A Kafka source for Spark Structured Streaming written on Spark's Python data source API.

    spark.dataSource.register(KafkaSource)
    df = spark.readStream.format("edgefleet_kafka").option("bootstrap", "127.0.0.1:9092").option("topic", "events").load()

Why: the pyspark wheel has no ``spark-sql-kafka-0-10`` JAR and ``spark.jars.packages`` needs Maven,
which this environment cannot reach, so ``format("kafka")`` fails with
``KAFKA_DATA_SOURCE_NOT_ENABLED``. Spark >= 4.0 lets a source be written in Python
(``DataSourceStreamReader``): the driver plans offset ranges, each task reads its range with
confluent-kafka by *assigning* its partition and *seeking* to the start offset (no consumer group,
nothing committed to Kafka). The offsets live in Spark's checkpoint: ``{"<partition>": next_offset}``.
:func:`kafka_jvm_available` tells whether the JVM connector is on the classpath (a real cluster);
:mod:`runtimes.spark.streaming` then uses ``format("kafka")`` and says which one ran.

Rows: ``partition int, offset long, timestamp long`` (the message's Kafka timestamp, ms),
``key string, value string`` (UTF-8, invalid bytes replaced).

A task returns exactly the messages of its range or fails (Spark retries it): if the broker
reported an end offset that it then cannot deliver within ``read_timeout_s``, the task raises
naming the partition and range, rather than committing a range it did not read. End offsets are not
trusted: Tansu reported a high watermark of 1 for partitions holding ~500 messages each (the issue
saw 6,229 vs 6,400), and in the hot-swap test a stream planned from it stopped short of the last
events. So the driver plans a batch's end by *reading*: one probe consumer stays assigned to every
partition across micro-batches and fetches ahead in the background; at each trigger ``latestOffset``
drains what it has fetched (waiting at most ``PROBE_WAIT_S`` when nothing new arrived) and the end is
one past the highest offset it has actually read, capped per batch. The probe stops after
``PROBE_BUDGET_S`` even while messages keep arriving: a probe that read "until an empty poll" never
found one on a live stream, so one micro-batch grew until the producer paused (the 16 s p95 of
bench/stream.py). The new range is read twice (driver and task), the price of not trusting the
broker's marks; a partition never moves backwards.
"""

from __future__ import annotations

import time
from typing import Any, Iterator

from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition, SimpleDataSourceStreamReader

SCHEMA = "partition int, offset long, timestamp long, key string, value string"
FORMAT = "edgefleet_kafka"
DRIVER_FORMAT = "edgefleet_kafka_driver"
PROBE_CAP = 50_000  # offsets per partition per micro-batch when no maxOffsetsPerTrigger is set
PROBE_WAIT_S = 0.2  # with nothing new in the probe consumer's queue, it waits this long for a fetch before "no new data"
PROBE_BUDGET_S = 0.3  # at most this long per micro-batch: a live stream never gives an empty poll, so the probe must stop


def client_conf(bootstrap: str, **extra: Any) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap, "socket.timeout.ms": 10_000, **extra}


def consumer_conf(bootstrap: str, group: str, **extra: Any) -> dict[str, Any]:
    # session.timeout.ms=10000: with defaults a Tansu consumer group got no partitions for ~8 s
    return client_conf(bootstrap, **{"group.id": group, "session.timeout.ms": 10_000, "enable.auto.commit": False,
                                     "enable.partition.eof": False, "auto.offset.reset": "earliest", "log_level": 3,
                                     # a fetch that long-polls at the log end (default 500 ms) delays the next re-assign's first
                                     # fetch past the driver's probe wait: the stream then sees "no new data" at every trigger
                                     "fetch.wait.max.ms": 50, **extra})


def _consumer(bootstrap: str) -> Any:
    from confluent_kafka import Consumer

    return Consumer(consumer_conf(bootstrap, "edgefleet-spark-source"))


def partitions_of(consumer: Any, topic: str, timeout: float = 10.0) -> list[int]:
    """The topic's partitions (metadata only); [] while the topic does not exist."""
    md = consumer.list_topics(topic, timeout=timeout)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        return []
    return sorted(t.partitions)


def watermarks(consumer: Any, topic: str, timeout: float = 10.0) -> dict[int, tuple[int, int]]:
    """{partition: (low, high)} for the topic; {} while the topic does not exist."""
    from confluent_kafka import TopicPartition

    md = consumer.list_topics(topic, timeout=timeout)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        return {}
    return {p: tuple(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)) for p in sorted(t.partitions)}


class OffsetRange(InputPartition):
    """One task: offsets start <= o < end of one partition."""

    def __init__(self, partition: int, start: int, end: int) -> None:
        self.partition, self.start, self.end = partition, start, end


class KafkaStreamReader(DataSourceStreamReader):
    def __init__(self, options: dict[str, str]) -> None:
        options = {k.lower(): v for k, v in options.items()}  # Spark's options are case-insensitive: dict() of them is lower-case
        self.bootstrap = options["bootstrap"]
        self.topic = options["topic"]
        self.max_per_trigger = int(options.get("maxoffsetspertrigger", "0") or 0)
        self.read_timeout_s = float(options.get("readtimeoutseconds", "60"))
        self._consumer: Any = None
        self._readable: dict[int, int] = {}  # partition -> one past the highest offset the probe consumer has read
        self._assigned: dict[int, int] = {}  # partition -> the offset it was last assigned at

    def _c(self) -> Any:
        if self._consumer is None:
            self._consumer = _consumer(self.bootstrap)
        return self._consumer

    def initialOffset(self) -> dict[str, int]:
        return {str(p): low for p, (low, _) in watermarks(self._c(), self.topic).items()}

    def latestOffset(self, start: dict[str, int] | None = None, limit: Any = None) -> dict[str, int]:
        start = dict(start or {})
        parts = partitions_of(self._c(), self.topic)
        first = {p: int(start[str(p)]) if str(p) in start else self._low(p) for p in parts}  # a new partition: its low mark
        cap = self.max_per_trigger // max(1, len(parts)) if self.max_per_trigger else PROBE_CAP
        readable = self._probe(first, {p: s + max(1, cap) for p, s in first.items()})
        end = dict(start)
        for p, s in first.items():
            end[str(p)] = max(s, min(readable.get(p, s), s + max(1, cap)))  # the reported high mark is not used: see the module doc
        return end

    def _low(self, partition: int) -> int:
        from confluent_kafka import TopicPartition

        return int(self._c().get_watermark_offsets(TopicPartition(self.topic, partition), timeout=10.0)[0])

    def _probe(self, first: dict[int, int], caps: dict[int, int]) -> dict[int, int]:
        """{partition: one past the highest offset actually read}: one consumer stays assigned across micro-batches and
        reads ahead in the background, so this call mostly drains what it already fetched. It is re-assigned only when the
        partitions change or a batch starts past what it has read (a restart on a checkpoint)."""
        from confluent_kafka import TopicPartition

        c = self._c()
        if set(first) != set(self._assigned) or any(s > self._readable.get(p, -1) for p, s in first.items()):
            at = {p: max(s, self._readable.get(p, s)) for p, s in first.items()}  # offsets below what it read are known
            c.assign([TopicPartition(self.topic, p, o) for p, o in sorted(at.items())])
            self._assigned, self._readable = dict(at), dict(at)
        deadline = time.monotonic() + PROBE_BUDGET_S
        got_any = False
        while any(self._readable[p] < caps[p] for p in first):
            # drain the local queue without waiting (a batch consume waits its whole timeout to fill up); when nothing new
            # has arrived at all, wait briefly for one message
            msgs = c.consume(num_messages=10_000, timeout=0)
            if not msgs and not got_any:
                msgs = c.consume(num_messages=1, timeout=max(0.0, min(PROBE_WAIT_S, deadline - time.monotonic())))
            fresh = [m for m in msgs if m.error() is None]
            for m in fresh:
                p = int(m.partition())
                if p in self._readable:
                    self._readable[p] = max(self._readable[p], int(m.offset()) + 1)
            if not fresh or time.monotonic() >= deadline:
                break
            got_any = True
        return dict(self._readable)

    def partitions(self, start: dict[str, int], end: dict[str, int]) -> list[OffsetRange]:
        return [OffsetRange(int(p), int(start.get(p, e)), int(e)) for p, e in sorted(end.items(), key=lambda kv: int(kv[0]))
                if int(e) > int(start.get(p, e))]

    def read(self, partition: InputPartition) -> Iterator[tuple[Any, ...]]:
        assert isinstance(partition, OffsetRange)
        yield from read_range(self.bootstrap, self.topic, partition.partition, partition.start, partition.end, self.read_timeout_s)

    def commit(self, end: dict[str, int]) -> None:
        pass  # the offsets are Spark's checkpoint; nothing is committed to Kafka

    def stop(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


def read_range(bootstrap: str, topic: str, partition: int, start: int, end: int, timeout_s: float = 60.0) -> Iterator[tuple[Any, ...]]:
    """Every message with start <= offset < end of one partition, in offset order, or an error naming the range."""
    from confluent_kafka import TopicPartition

    c = _consumer(bootstrap)
    try:
        c.assign([TopicPartition(topic, partition, start)])
        nxt = start
        deadline = time.monotonic() + timeout_s
        while nxt < end:
            msgs = c.consume(num_messages=min(10_000, end - nxt), timeout=1.0)
            for m in msgs:
                if m.error() is not None:
                    continue  # partition EOF and transient errors: the deadline decides
                off = int(m.offset())
                if off < nxt:
                    continue
                if off >= end:
                    nxt = end
                    break
                key, val = m.key(), m.value()
                yield (partition, off, int(m.timestamp()[1]), None if key is None else key.decode("utf-8", "replace"),
                       None if val is None else val.decode("utf-8", "replace"))
                nxt = off + 1
            if msgs:
                deadline = time.monotonic() + timeout_s
            elif nxt < end:
                pos = c.position([TopicPartition(topic, partition)])[0].offset
                if pos >= end:  # offsets with no readable message (e.g. transaction markers)
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"kafka {topic}[{partition}]: offsets {nxt}..{end - 1} were reported but not delivered "
                                       f"within {timeout_s:.0f}s (the range is retried, never skipped)")
    finally:
        c.close()


def arrow_batch(rows: list[tuple[Any, ...]]) -> Any:
    """Rows in SCHEMA order as one Arrow RecordBatch: Spark takes it as is (no per-row conversion in Python)."""
    import pyarrow as pa

    cols = list(zip(*rows))
    types = (pa.int32(), pa.int64(), pa.int64(), pa.string(), pa.string())
    return pa.record_batch([pa.array(c, t) for c, t in zip(cols, types)], names=["partition", "offset", "timestamp", "key", "value"])


class KafkaDriverReader(SimpleDataSourceStreamReader):
    """The micro-batch is read once, by the probe itself, in Spark's source process on the driver: no second read by a task.

    ``read(start)`` drains the consumer that stays assigned across micro-batches (as :meth:`KafkaStreamReader._probe`,
    same budget and cap) and returns those messages with the end one past the last offset it returned; Spark writes that
    end to its offset log before the batch runs, and ships the rows to the JVM with the plan. A restart replays an
    uncommitted batch through ``readBetweenOffsets`` (:func:`read_range`, exactly that range per partition). Spark gives a
    simple reader no read limit, so ``maxOffsetsPerTrigger`` is applied here; messages fetched past the cap wait for the
    next batch.
    """

    def __init__(self, options: dict[str, str]) -> None:
        self._ranges = KafkaStreamReader(options)  # watermarks, the low mark of a new partition, the options
        self._pos: dict[int, int] = {}  # partition -> the end last returned: where the next batch starts
        self._ahead: dict[int, list[tuple[Any, ...]]] = {}  # fetched past the cap, for the next batch

    def initialOffset(self) -> dict[str, int]:
        return self._ranges.initialOffset()

    def read(self, start: dict[str, int]) -> tuple[Iterator[Any], dict[str, int]]:
        from confluent_kafka import TopicPartition

        r = self._ranges
        c = r._c()
        parts = partitions_of(c, r.topic)
        first = {p: int(start[str(p)]) if str(p) in start else r._low(p) for p in parts}
        if first != self._pos:  # the first batch, a new partition, or a start other than our last end: seek
            c.assign([TopicPartition(r.topic, p, o) for p, o in sorted(first.items())])
            self._pos, self._ahead = dict(first), {p: [] for p in first}
        cap = max(1, r.max_per_trigger // max(1, len(parts)) if r.max_per_trigger else PROBE_CAP)
        got = {p: self._ahead.get(p, []) for p in first}  # messages at or past each partition's start, in offset order
        deadline = time.monotonic() + PROBE_BUDGET_S
        got_any = any(got.values())
        while any(len(got[p]) < cap for p in first):
            # drain the local queue without waiting (a batch consume waits its whole timeout to fill up); when nothing new
            # has arrived at all, wait briefly for one message
            msgs = c.consume(num_messages=10_000, timeout=0)
            if not msgs and not got_any:
                msgs = c.consume(num_messages=1, timeout=max(0.0, min(PROBE_WAIT_S, deadline - time.monotonic())))
            fresh = [m for m in msgs if m.error() is None]
            for m in fresh:
                p, off = int(m.partition()), int(m.offset())
                box = got.get(p)
                if box is None or off <= (box[-1][1] if box else first[p] - 1):
                    continue  # not ours, or a re-delivery after a seek
                key, val = m.key(), m.value()
                box.append((p, off, int(m.timestamp()[1]), None if key is None else key.decode("utf-8", "replace"),
                            None if val is None else val.decode("utf-8", "replace")))
            if not fresh or time.monotonic() >= deadline:
                break
            got_any = True
        taken = {p: box[:cap] for p, box in got.items()}
        self._ahead = {p: box[cap:] for p, box in got.items()}
        end = dict(start)
        for p, s in first.items():
            end[str(p)] = taken[p][-1][1] + 1 if taken[p] else s
        end = dict(sorted(end.items(), key=lambda kv: int(kv[0])))  # Spark finds the cached rows by this dict's JSON
        self._pos = {p: int(end[str(p)]) for p in first}
        rows = [row for p in sorted(taken) for row in taken[p]]
        return iter([arrow_batch(rows)] if rows else []), end

    def readBetweenOffsets(self, start: dict[str, int], end: dict[str, int]) -> Iterator[tuple[Any, ...]]:
        r = self._ranges
        for p, e in sorted(end.items(), key=lambda kv: int(kv[0])):
            s = int(start[p]) if p in start else r._low(int(p))  # a partition new in this batch started at its low mark
            if int(e) > s:
                yield from read_range(r.bootstrap, r.topic, int(p), s, int(e), r.read_timeout_s)

    def commit(self, end: dict[str, int]) -> None:
        pass  # the offsets are Spark's checkpoint; nothing is committed to Kafka

    def stop(self) -> None:
        self._ranges.stop()


class KafkaSource(DataSource):
    """Partitioned: the driver plans offset ranges and each task reads its own (throughput on a cluster)."""

    @classmethod
    def name(cls) -> str:
        return FORMAT

    def schema(self) -> str:
        return SCHEMA

    def streamReader(self, schema: Any) -> KafkaStreamReader:
        for opt in ("bootstrap", "topic"):
            if not self.options.get(opt):
                raise ValueError(f"option {opt!r} is required")
        return KafkaStreamReader(dict(self.options))


class KafkaDriverSource(DataSource):
    """Read on the driver (:class:`KafkaDriverReader`): one read per message, the rows travel with the plan (local masters)."""

    @classmethod
    def name(cls) -> str:
        return DRIVER_FORMAT

    def schema(self) -> str:
        return SCHEMA

    def simpleStreamReader(self, schema: Any) -> KafkaDriverReader:
        for opt in ("bootstrap", "topic"):
            if not self.options.get(opt):
                raise ValueError(f"option {opt!r} is required")
        return KafkaDriverReader(dict(self.options))


def kafka_jvm_available(spark: Any) -> bool:
    """True when Spark's own Kafka connector (``spark-sql-kafka-0-10``) is on the JVM classpath."""
    try:
        spark.sparkContext._jvm.java.lang.Class.forName("org.apache.spark.sql.kafka010.KafkaSourceProvider")
        return True
    except Exception:  # noqa: BLE001 - py4j raises its own error for ClassNotFoundException
        return False
