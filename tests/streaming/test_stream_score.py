"""stream-score on real Tansu + Spark local[2] + PostgreSQL: checkpointed offsets, an idempotent sink, rejects, SIGKILL + restart.

The job runs as the real CLI in its own process group (its driver and JVM); it is SIGKILLed once
while it writes, then restarted on the same checkpoint. Completeness is judged from the database
against the delivery reports of the producer, never from the broker's end offsets.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.spark.conftest import EDGEFLEET, table_rows
from tests.streaming.conftest import Event, create_topic, make_events, produce, reference


def test_kafka_verb_starts_tansu_on_loopback_and_says_memory_only(tmp_path: Path) -> None:
    from runtimes.spark.streaming_broker import free_port

    port = free_port()
    p = subprocess.Popen([str(EDGEFLEET), "kafka", "--port", str(port)], stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = p.stderr.readline() if p.stderr else ""
        assert f"listening on 127.0.0.1:{port}" in line and "memory-only" in line, line
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        from confluent_kafka.admin import AdminClient

        md = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"}).list_topics(timeout=10)
        assert [b.host for b in md.brokers.values()] == ["127.0.0.1"]  # advertised on loopback, not 0.0.0.0/localhost
    finally:
        os.killpg(p.pid, signal.SIGINT)
        assert p.wait(20) == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2)


def _stream_cmd(files: dict[str, Any], bootstrap: str, topic: str, url: str, ckpt: Path, *extra: str) -> list[str]:
    return [str(EDGEFLEET), "stream-score", "--bootstrap", bootstrap, "--topic", topic, "--bundle", str(files["bundle"]),
            "--pubkey", str(files["pubkey"]), "--output", url, "--checkpoint", str(ckpt), "--trigger", "500ms",
            "--max-offsets-per-trigger", "400", *extra]


def _count(url: str, sql: str) -> int:
    try:
        return int(table_rows(url, sql)[0][0])
    except Exception:  # noqa: BLE001 - the tables do not exist until the job has created them
        return 0


BOOTSTRAP = [""]


def _check_tables(url: str, table: str, events: list[Event], ref: dict[int, float], topic: str) -> None:
    from runtimes.spark.streaming import event_id

    eid = {ev.i: event_id(topic, ev.partition, ev.offset) for ev in events}
    last_valid: dict[str, Event] = {}
    for ev in events:
        if ev.valid:
            last_valid[ev.entity] = ev  # produced in order, one partition per customer: the last one is the newest
    latest = table_rows(url, f"SELECT entity_id, run_id, probability, model_version FROM {table}")
    assert len(latest) == len({r[0] for r in latest}) == len(last_valid), "exactly one latest row per customer"
    by_ent = {r[0]: r for r in latest}
    for ent, ev in last_valid.items():
        row = by_ent[ent]
        if row[1] != eid[ev.i]:
            from runtimes.spark.streaming_kafka import read_range

            at = {r[1]: r[4] for r in read_range(BOOTSTRAP[0], topic, ev.partition, 0, ev.offset + 3)}
            hist_e = table_rows(url, f"SELECT run_id, entity_id FROM {table}_history WHERE entity_id = '{ent}'")
            by_eid = {eid[e.i]: e for e in events}
            allh = table_rows(url, f"SELECT run_id, entity_id FROM {table}_history")
            wrong = sorted((r[0], r[1], by_eid[r[0]].entity if r[0] in by_eid else None) for r in allh
                           if r[0] not in by_eid or by_eid[r[0]].entity != r[1] or not by_eid[r[0]].valid)
            raise AssertionError(f"{len(wrong)} history rows disagree with the delivery reports: {wrong[:6]} .. {wrong[-3:]}; {ent}: latest {row[1]}, expected {eid[ev.i]}; events {[(e.i, e.partition, e.offset, e.valid) for e in events if e.entity == ent]}; "
                                 f"history {hist_e}; at {ev.offset}: {at.get(ev.offset, '')[:60]}; at +1: {at.get(ev.offset + 1, '')[:60]}")
        assert abs(row[2] - ref[ev.i]) <= 1e-9
    hist = table_rows(url, f"SELECT run_id, entity_id, probability FROM {table}_history")
    assert len(hist) == len({r[0] for r in hist}), "no event written twice"
    got = {r[0]: r for r in hist}
    valid = [ev for ev in events if ev.valid]
    missing = [ev.i for ev in valid if eid[ev.i] not in got]
    assert not missing, f"{len(missing)} valid events missing, first {missing[:5]}"
    assert len(got) == len(valid)
    assert max(abs(got[eid[ev.i]][2] - ref[ev.i]) for ev in valid) <= 1e-9
    rejects = table_rows(url, f"SELECT run_id, reason FROM {table}_rejects")
    reasons = {r[0]: r[1] for r in rejects}
    assert len(rejects) == len(reasons)
    bad = [ev for ev in events if not ev.valid]
    assert bad and len(reasons) == len(bad)
    for ev in bad:
        assert f"field {ev.bad_field!r}" in reasons[eid[ev.i]], (ev.i, ev.bad_field, reasons[eid[ev.i]])


def _run_killed_and_restarted(n: int, batch_files: dict[str, Any], tansu: Any, postgres_url: str, tmp_path: Path) -> None:
    topic, table = "customer-events", f"stream_{n}"
    t0 = time.monotonic()

    def stage(what: str) -> None:  # where the test's time goes (seen with -s or on failure)
        print(f"[stream {n}] {time.monotonic() - t0:6.1f}s {what}", flush=True)
    url = f"{postgres_url}?table={table}"
    create_topic(tansu.bootstrap, topic, partitions=2)
    events = make_events(n)
    ref = reference(batch_files["bundle"], batch_files["pubkey"], events)
    half = n // 2
    produce(tansu.bootstrap, topic, events[:half])
    ckpt = tmp_path / "ckpt"
    stage("first half produced")
    log1 = (tmp_path / "run1.log").open("w")
    env = {**os.environ, "HOME": str(tmp_path)}
    scores = ("--scores-topic", "churn-scores")
    p = subprocess.Popen(_stream_cmd(batch_files, tansu.bootstrap, topic, url, ckpt, *scores), cwd=tmp_path, stdout=log1, stderr=subprocess.STDOUT,
                         start_new_session=True, env=env)
    try:
        deadline = time.monotonic() + 180
        while _count(url, f"SELECT count(*) FROM {table}_history") < half // 3:
            assert p.poll() is None, (tmp_path / "run1.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "run1.log").read_text()[-3000:]
            time.sleep(0.05)
    finally:
        os.killpg(p.pid, signal.SIGKILL)  # the driver and its JVM, mid-stream
        p.wait(30)
    written = _count(url, f"SELECT count(*) FROM {table}_history")
    stage(f"killed after {written} rows")
    assert 0 < written < len(ref), written  # killed mid-stream
    produce(tansu.bootstrap, topic, events[half:])  # events arrive while the job is down
    r2 = subprocess.run([*_stream_cmd(batch_files, tansu.bootstrap, topic, url, ckpt, *scores), "--until-idle", "3"], cwd=tmp_path,
                        capture_output=True, text=True, timeout=600, env=env)
    stage("restarted run stopped")
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert "python data source" in r2.stderr  # which source ran is said
    BOOTSTRAP[0] = tansu.bootstrap
    _check_tables(url, table, events, ref, topic)
    stage("tables checked")
    _check_scores_topic(tansu.bootstrap, "churn-scores", url, table)
    stage("scores topic checked")


def _read_topic(bootstrap: str, topic: str, expected: set[str], idle_s: float = 3.0, settle_s: float = 1.0) -> list[dict[str, Any]]:
    """Every message of every partition, from offset 0 until idle_s without one (end offsets are not trusted), or
    settle_s without one once every ``expected`` event has been seen (the job has exited, so nothing more is on its way;
    the settle still catches a replayed batch's second copy): the 3 s idle alone was 3 s of every run."""
    import json

    from confluent_kafka import TopicPartition

    from runtimes.spark.streaming_kafka import _consumer, partitions_of

    c = _consumer(bootstrap)
    try:
        c.assign([TopicPartition(topic, p, 0) for p in partitions_of(c, topic)])
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        last = time.monotonic()
        while time.monotonic() - last < (settle_s if expected <= seen else idle_s):
            msgs = [m for m in c.consume(num_messages=5000, timeout=0.25) if m.error() is None]
            if msgs:
                last = time.monotonic()
            out.extend(json.loads(m.value()) for m in msgs)
            seen.update(msg["event"] for msg in out[len(out) - len(msgs):])
        return out
    finally:
        c.close()


def _check_scores_topic(bootstrap: str, scores_topic: str, url: str, table: str) -> None:
    """--scores-topic: each stored score also appears on the topic, with the same probability and model version
    (at least once: a batch replayed after the SIGKILL produces its scores again, identical)."""
    hist = {r[0]: r for r in table_rows(url, f"SELECT run_id, entity_id, probability, model_version, bundle_sha256 FROM {table}_history")}
    published = _read_topic(bootstrap, scores_topic, set(hist))
    by_event: dict[str, list[dict[str, Any]]] = {}
    for msg in published:
        by_event.setdefault(msg["event"], []).append(msg)
    missing = sorted(set(hist) - set(by_event))
    assert not missing, f"{len(missing)} stored scores not on {scores_topic}, first {missing[:3]}"
    assert set(by_event) == set(hist), sorted(set(by_event) - set(hist))[:3]  # nothing published that is not stored
    for eid, msgs in by_event.items():
        row = hist[eid]
        for msg in msgs:
            assert (msg["entity_id"], msg["model_version"], msg["bundle_sha256"]) == (row[1], row[3], row[4]), (msg, row)
            assert msg["probability"] == row[2], (msg, row)  # the same float: JSON round-trips a double exactly


def test_stream_score_sigkill_restart_no_loss_no_double(batch_files: dict[str, Any], tansu: Any, postgres_url: str, tmp_path: Path) -> None:
    _run_killed_and_restarted(2_000, batch_files, tansu, postgres_url, tmp_path)


@pytest.mark.slow
def test_stream_score_20000_events_sigkill_restart(batch_files: dict[str, Any], tansu: Any, postgres_url: str, tmp_path: Path) -> None:
    _run_killed_and_restarted(20_000, batch_files, tansu, postgres_url, tmp_path)
