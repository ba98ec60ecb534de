"""The Python Kafka source's driver reader on a real Tansu broker, without Spark: batches, the per-trigger cap, replay.

What Spark relies on: consecutive ``read(start)`` calls return every message once, in offset order per partition, with
the end one past the last message returned; ``maxOffsetsPerTrigger`` caps a batch (it was once silently ignored: Spark
hands the options over lower-cased); ``readBetweenOffsets`` (a restart's replay) returns exactly the rows that batch had.
"""

from __future__ import annotations

from typing import Any

from tests.streaming.conftest import create_topic, make_events, produce


def _rows(it: Any) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for b in it:  # one Arrow RecordBatch per read, or tuples from readBetweenOffsets
        out.extend(zip(*(b.column(i).to_pylist() for i in range(b.num_columns))) if hasattr(b, "num_columns") else [tuple(b)])
    return out


def test_driver_reader_caps_batches_returns_each_message_once_and_replays_a_range(tansu: Any) -> None:
    from runtimes.spark.streaming_kafka import KafkaDriverReader

    topic = "source-events"
    create_topic(tansu.bootstrap, topic, partitions=2)
    events = make_events(1_000, bad_every=10**9)
    produce(tansu.bootstrap, topic, events)
    expected = {(ev.partition, ev.offset): ev.value.decode() for ev in events}

    # the options as Spark passes them (CaseInsensitiveDict: dict() of it is lower-case)
    reader = KafkaDriverReader({"bootstrap": tansu.bootstrap, "topic": topic, "maxoffsetspertrigger": "300"})
    start = reader.initialOffset()
    assert start == {"0": 0, "1": 0}
    seen: dict[tuple[int, int], str] = {}
    batches: list[tuple[dict[str, int], dict[str, int], list[tuple[Any, ...]]]] = []
    for _ in range(40):
        it, end = reader.read(start)
        rows = _rows(it)
        for p in (0, 1):
            mine = [r[1] for r in rows if r[0] == p]
            assert len(mine) <= 150, f"partition {p}: {len(mine)} rows past the cap of 300 / 2 partitions"
            assert mine == sorted(mine) and (not mine or (mine[0] >= start[str(p)] and end[str(p)] == mine[-1] + 1))
        for r in rows:
            assert (r[0], r[1]) not in seen, f"offset {r[:2]} returned twice"
            seen[(r[0], r[1])] = r[4]
        batches.append((start, end, rows))
        if len(seen) == len(expected):
            break
        start = end
    assert seen == expected  # every message once, with its value
    assert len([b for b in batches if b[2]]) >= 4  # 1,000 events at <= 300 per batch

    # a restart replays an uncommitted batch from its offsets alone: the same rows, read by a fresh reader
    s, e, rows = next(b for b in batches[1:] if b[2])
    replay = KafkaDriverReader({"bootstrap": tansu.bootstrap, "topic": topic})
    assert sorted(_rows(replay.readBetweenOffsets(s, e))) == sorted(rows)
    replay.stop()
    # and a read from a start other than its last end seeks back there (the checkpoint is the truth, not the reader)
    it, _ = reader.read(s)
    again = _rows(it)
    assert again and {p: min(r[1] for r in again if r[0] == p) for p in {r[0] for r in again}} == \
        {p: min(r[1] for r in rows if r[0] == p) for p in {r[0] for r in again}}
    reader.stop()
