"""The Python Kafka source's driver reader on a real Tansu broker, without Spark: batches, the per-trigger cap, replay.

What Spark relies on: consecutive ``read(start)`` calls return every message once, in offset order per partition, with
the end one past the last message returned; ``maxOffsetsPerTrigger`` caps a batch (it was once silently ignored: Spark
hands the options over lower-cased); ``readBetweenOffsets`` (a restart's replay) returns exactly the rows that batch had.
"""

from __future__ import annotations

import io
import threading
import time
from typing import Any

import pytest

from tests.fleet_server.conftest import wait_for
from tests.streaming.conftest import create_topic, make_events, produce


def _count(url: str, sql: str) -> int:
    from tests.spark.conftest import table_rows

    try:
        return int(table_rows(url, sql)[0][0])
    except Exception:  # noqa: BLE001 - the tables do not exist until the job has created them
        return 0


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


@pytest.mark.slow  # 17 s at load ~3 (mapInPandas workers start); the default run has the driver path's SIGKILL test
def test_partitioned_reader_and_mapinpandas_path_scores_every_event_once(spark: Any, tansu: Any, batch_files: dict[str, Any],
                                                                         tmp_path: Any) -> None:
    """The cluster path (a task per offset range, mapInPandas on the workers), run on the shared local session."""
    from runtimes.spark.streaming import StreamConfig, run_stream
    from tests.streaming.conftest import reference
    from tests.streaming.test_stream_score import _check_tables

    topic = "events-partitioned"
    create_topic(tansu.bootstrap, topic, partitions=2)
    events = make_events(600)
    produce(tansu.bootstrap, topic, events)
    url = f"sqlite:///{tmp_path / 'ops.db'}?table=part_scores"
    cfg = StreamConfig(bootstrap=tansu.bootstrap, topic=topic, pubkey=str(batch_files["pubkey"]), output=url,
                       checkpoint=str(tmp_path / "ckpt"), bundle=str(batch_files["bundle"]), trigger="500 milliseconds",
                       max_offsets_per_trigger=200, reader="partitioned")
    stop = threading.Event()
    out: dict[str, Any] = {}
    log = io.StringIO()
    job = threading.Thread(target=lambda: out.update(res=run_stream(cfg, stream=log, session=spark, stop=stop)), daemon=True)
    job.start()
    done = "SELECT (SELECT count(*) FROM part_scores_history) + (SELECT count(*) FROM part_scores_rejects)"
    try:  # stopped once every event is a row or a reject (an idle timer would race a slow probe on a loaded machine)
        wait_for(lambda: job.is_alive() is False or _count(url, done) >= len(events), timeout=180, what="all 600 events")
        time.sleep(1.0)  # a little longer, so that a double write would show
    finally:
        stop.set()
        job.join(60)
    assert "res" in out, log.getvalue()[-2000:]
    res = out["res"]
    assert "partitioned" in res.source
    assert res.batches >= 3  # 600 events at <= 200 per batch
    _check_tables(url, "part_scores", events, reference(batch_files["bundle"], batch_files["pubkey"], events), topic)
