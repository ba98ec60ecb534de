"""The telemetry store path of issue 13 on SQLite and a real PostgreSQL: driver executemany / COPY
into a staging table, the parse-ahead thread, and the guarantees kept (no mocks: a real Fleet,
the real IngestQueue, real databases).

- a message id redelivered (in a later batch, twice in one batch, or by two racing writers) is
  stored once, and ``accepted`` counts only the rows actually inserted;
- a malformed record rejects its own batch with the field named, and the other batches of the
  same commit group are stored and acknowledged;
- a batch is acknowledged only after the commit that stored it (the rows are visible to another
  connection when the ack is sent);
- what the quick parse route skips (the whole-document clean walk) is still refused and named.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select, text

from fleet_server import ingest
from fleet_server.core import Fleet, ServerConfig
from fleet_server.db import TelemetryRecord
from fleet_server.errors import FleetError
from fleet_server.mqtt.bridge import IngestQueue
from tests.fleet_server.conftest import db_url, fresh_pg  # noqa: F401 - fixtures


@pytest.fixture()
def fleet(tmp_path: Path, db_url: str | None) -> Any:  # noqa: F811 - the imported fixture
    f = Fleet(ServerConfig(data_dir=tmp_path / "fleet", db_url=db_url, embedded_broker=False, port=0))
    yield f
    f.engine.dispose()


@pytest.fixture(scope="module")
def sqlite_fleet(tmp_path_factory: pytest.TempPathFactory) -> Any:
    f = Fleet(ServerConfig(data_dir=tmp_path_factory.mktemp("fleet"), embedded_broker=False, port=0))
    yield f
    f.engine.dispose()


def _msg(mid: str, score: Any = 0.25, **body: Any) -> dict[str, Any]:
    return {"id": mid, "kind": "prediction", "created": 1_764_417_600.0,
            "body": {"device_id": "d-1", "model": "churn", "model_version": 1, "score": score, "label": 0, "sample_rate": 1.0,
                     "entity_id": f"C-{mid}", "features": {"tenure": 3, "Contract": "One year", "paperless": True}, **body}}


def _batch(device: str, msgs: list[dict[str, Any]], batch_id: str | None = None) -> bytes:
    doc: dict[str, Any] = {"device_id": device, "messages": msgs}
    if batch_id:
        doc = {"batch_id": batch_id, **doc}
    return json.dumps(doc).encode()


def _ids(fleet: Fleet, device: str | None = None) -> list[str]:
    with fleet.session() as s:
        q = select(TelemetryRecord.id)
        if device:
            q = q.where(TelemetryRecord.device_id == device)
        return list(s.scalars(q))


def _counters(fleet: Fleet) -> dict[str, int]:
    with fleet.engine.connect() as c:
        return {n: int(v) for n, v in c.execute(text("SELECT name, value FROM counters"))}


def test_duplicates_are_stored_once_and_counted(fleet: Fleet) -> None:
    first = [_msg(f"m{i}") for i in range(5)]
    assert ingest.ingest(fleet, "d-1", _batch("d-1", first)) == (5, 0)
    # a redelivery of two of them, one id twice in the same batch, and two new ones
    again = [first[1], first[3], _msg("n1"), _msg("n1"), _msg("n2")]
    assert ingest.ingest(fleet, "d-1", _batch("d-1", again)) == (2, 3)
    ids = _ids(fleet)
    assert sorted(ids) == sorted({m["id"] for m in first + again}) and len(ids) == 7
    c = _counters(fleet)
    assert c["telemetry_accepted"] == 7 and c["telemetry_duplicates"] == 3, c
    with fleet.session() as s:  # the stored row reads back as the ORM row it always was
        row = s.get(TelemetryRecord, "m1")
        assert row is not None and row.body["features"] == {"tenure": 3, "Contract": "One year", "paperless": True}
        assert row.score == 0.25 and row.entity_id == "C-m1" and row.label == "0" and row.received_at is not None


def test_two_racing_writers_of_the_same_ids_accept_each_row_once(fleet: Fleet) -> None:
    msgs = [_msg(f"r{i}") for i in range(300)]
    raw = _batch("d-1", msgs)
    results: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(ingest.ingest(fleet, "d-1", raw))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert sum(a for a, _ in results) == 300 and sum(d for _, d in results) == 600, results
    assert len(_ids(fleet)) == 300


def _record_acks(q: IngestQueue, fleet: Fleet) -> tuple[list[tuple[str, dict[str, Any]]], list[set[str]], Any]:
    """(the acks ``q`` sends, the ids another connection sees committed at each ack call, that connection's engine)."""
    seen: list[tuple[str, dict[str, Any]]] = []
    visible_at_ack: list[set[str]] = []
    other = create_engine(fleet.db_url)  # another connection: sees only what was committed

    def on_acks(acks: list[tuple[str, dict[str, Any]]]) -> None:
        with other.connect() as c:
            visible_at_ack.append({r[0] for r in c.execute(text("SELECT id FROM telemetry"))})
        seen.extend(acks)

    q.on_acks = on_acks
    return seen, visible_at_ack, other


def _run_until(q: IngestQueue, seen: list[Any], n: int, timeout: float) -> None:
    """Start the worker, wait for ``n`` acks (at most ``timeout`` s), stop it."""
    q.start()
    deadline = time.monotonic() + timeout
    while len(seen) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    q.stop()


def test_a_malformed_record_rejects_its_batch_by_name_and_the_group_stores_the_rest(fleet: Fleet) -> None:
    q = IngestQueue(fleet)
    seen, visible_at_ack, other = _record_acks(q, fleet)
    good_a = [_msg(f"a{i}") for i in range(3)]
    bad = [_msg("b0"), _msg("b1", score="high"), _msg("b2")]
    good_c = [_msg(f"c{i}") for i in range(3)]
    acked: list[str] = []
    # queued before the worker starts, so the three land in one commit group (and the parse-ahead thread sees them queued)
    for dev, msgs, bid in (("d-a", good_a, "ba"), ("d-b", bad, "bb"), ("d-c", good_c, "bc")):
        assert q.submit(f"edgefleet/v1/devices/{dev}/telemetry", _batch(dev, msgs, bid), lambda d=dev: acked.append(d))
    _run_until(q, seen, 3, 20)
    other.dispose()
    by_dev = dict(seen)
    assert by_dev["d-a"] == {"batch_id": "ba", "result": "stored", "ids": ["a0", "a1", "a2"]}
    assert by_dev["d-c"] == {"batch_id": "bc", "result": "stored", "ids": ["c0", "c1", "c2"]}
    assert by_dev["d-b"]["result"] == "rejected" and by_dev["d-b"]["batch_id"] == "bb"
    assert by_dev["d-b"]["reason"].startswith("messages[1].body.score:"), by_dev["d-b"]
    assert sorted(_ids(fleet)) == ["a0", "a1", "a2", "c0", "c1", "c2"]
    assert sorted(acked) == ["d-a", "d-b", "d-c"]  # every transport ack sent, the rejected one included (it is final)
    # acknowledged only after the commit: another connection already saw every stored id
    assert visible_at_ack and {"a0", "a1", "a2", "c0", "c1", "c2"} <= set().union(*visible_at_ack)
    c = _counters(fleet)
    assert c["telemetry_rejected"] == 1 and c["telemetry_accepted"] == 6, c


def test_a_group_stored_in_several_inserts_is_one_commit(fleet: Fleet) -> None:
    """On SQLite the worker inserts a group's rows every FLUSH_ROWS as their parse arrives, in the
    group's one transaction (on PostgreSQL the group is one COPY, and the repeated id takes the
    unique violation and the staging table): an id repeated three inserts later is stored once and
    counted as a duplicate, a batch refused between them costs only itself, and the acks follow
    the group's one commit."""
    q = IngestQueue(fleet, parse_processes=1)
    q.FLUSH_ROWS = 4
    seen, visible_at_ack, other = _record_acks(q, fleet)
    batches = [[_msg(f"g{b}-{i}") for i in range(3)] for b in range(6)]
    batches[3] = [_msg("g3-0"), _msg("g3-1", model_version=-1)]  # refused: model_version below 0
    batches[5] = [_msg("g0-1"), _msg("g5-0")]  # g0-1 again, three inserts later
    for b, msgs in enumerate(batches):
        assert q.submit("edgefleet/v1/devices/d-1/telemetry", _batch("d-1", msgs, f"b{b}"), lambda: None)
    _run_until(q, seen, 6, 30)
    other.dispose()
    stored = {f"g{b}-{i}" for b in (0, 1, 2, 4) for i in range(3)} | {"g5-0"}
    assert sorted(_ids(fleet)) == sorted(stored)
    results = {body["batch_id"]: body["result"] for _dev, body in seen}
    assert results == {"b0": "stored", "b1": "stored", "b2": "stored", "b3": "rejected", "b4": "stored", "b5": "stored"}, seen
    assert len(visible_at_ack) == 1 and stored <= visible_at_ack[0], "acked before the group's one commit"
    c = _counters(fleet)
    assert c["telemetry_accepted"] == 13 and c["telemetry_duplicates"] == 1 and c["telemetry_rejected"] == 1, c


@pytest.mark.parametrize("raw, field", [
    (b'{"messages": [%s]}' % json.dumps(_msg("x", features={"f": "a\\u0000b"})).encode().replace(b"\\\\u", b"\\u"), "messages[0].body"),
    (b'{"messages": [%s]}' % json.dumps(_msg("x", note="\\ud800")).encode().replace(b"\\\\u", b"\\u"), "messages[0].body.note"),
    (b'{"messages": [%s]}' % json.dumps(_msg("x")).encode().replace(b'"score": 0.25', b'"score": 1e999'), "messages[0].body.score"),
    (b'{"sent_at": ' + b"[" * 40 + b"]" * 40 + b', "messages": []}', "body"),
    (b'{"messages": [{"id": "x", "kind": "prediction", "created": 1.0, "body": {"features": {"f": -1.5e400}}}]}',
     "messages[0].body.features.f"),
])
def test_what_the_quick_parse_skips_is_still_refused_and_named(sqlite_fleet: Fleet, raw: bytes, field: str) -> None:
    with pytest.raises(FleetError) as ei:
        ingest.ingest(sqlite_fleet, "d-1", raw)
    assert str(ei.value).startswith(field), str(ei.value)
    with sqlite_fleet.session() as s:
        assert s.scalar(select(func.count()).select_from(TelemetryRecord)) == 0
