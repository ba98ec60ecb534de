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
events. So the driver plans a batch's end by *reading forward* from the batch's start until an
empty poll (``PROBE_WAIT_S``) or the per-batch cap: the new range is read twice (driver and task),
the price of not trusting the broker's marks; a partition never moves backwards.
"""

from __future__ import annotations

import time
from typing import Any, Iterator

from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition

SCHEMA = "partition int, offset long, timestamp long, key string, value string"
FORMAT = "edgefleet_kafka"
PROBE_CAP = 50_000  # offsets per partition per micro-batch when no maxOffsetsPerTrigger is set
PROBE_WAIT_S = 0.5  # the driver's probe stops at the first empty poll this long


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
        self.bootstrap = options["bootstrap"]
        self.topic = options["topic"]
        self.max_per_trigger = int(options.get("maxOffsetsPerTrigger", "0") or 0)
        self.read_timeout_s = float(options.get("readTimeoutSeconds", "60"))
        self._consumer: Any = None

    def _c(self) -> Any:
        if self._consumer is None:
            self._consumer = _consumer(self.bootstrap)
        return self._consumer

    def initialOffset(self) -> dict[str, int]:
        return {str(p): low for p, (low, _) in watermarks(self._c(), self.topic).items()}

    def latestOffset(self, start: dict[str, int] | None = None, limit: Any = None) -> dict[str, int]:
        start = dict(start or {})
        marks = watermarks(self._c(), self.topic)
        end = dict(start)
        cap = self.max_per_trigger // max(1, len(marks)) if self.max_per_trigger else PROBE_CAP
        for p, (low, high) in marks.items():
            s = int(start.get(str(p), low))  # a partition new since the last batch starts at its low mark
            end[str(p)] = self._probe(p, s, s + max(1, cap))  # the reported high mark is not used: see the module doc
        return end

    def _probe(self, partition: int, frm: int, cap: int) -> int:
        """The end offset actually readable: read forward from ``frm`` (the batch start) until an empty poll or ``cap``."""
        from confluent_kafka import TopicPartition

        if frm >= cap:
            return cap
        c = self._c()
        c.assign([TopicPartition(self.topic, partition, frm)])
        end = frm
        while end < cap:
            msgs = [m for m in c.consume(num_messages=min(10_000, cap - end), timeout=PROBE_WAIT_S) if m.error() is None]
            if not msgs:
                break
            end = max(end, min(cap, max(int(m.offset()) for m in msgs) + 1))
        return end

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


class KafkaSource(DataSource):
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


def kafka_jvm_available(spark: Any) -> bool:
    """True when Spark's own Kafka connector (``spark-sql-kafka-0-10``) is on the JVM classpath."""
    try:
        spark.sparkContext._jvm.java.lang.Class.forName("org.apache.spark.sql.kafka010.KafkaSourceProvider")
        return True
    except Exception:  # noqa: BLE001 - py4j raises its own error for ClassNotFoundException
        return False
