"""The bridge's parser process (fleet_server/mqtt/parse_pool.py), for real: a forkserver child
runs ``ingest.parse_tuples``. It must answer exactly as the worker's own parse (the same rows, or
the same error naming the field), and a parser process that dies must cost no batch: the worker
parses in-process and every batch is stored and acknowledged after its commit."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import pytest

from fleet_server import ingest
from fleet_server.core import Fleet
from fleet_server.errors import FleetError
from fleet_server.mqtt.bridge import IngestQueue
from fleet_server.mqtt.parse_pool import ParsePool
from tests.fleet_server.conftest import db_url, fresh_pg  # noqa: F401 - fixtures
from tests.fleet_server.ingest.test_ingest_store import _batch, _ids, _msg, fleet  # noqa: F401 - fixture

LIMIT = 4 * 1024 * 1024

PAYLOADS = [
    _batch("d-1", [_msg(f"m{i}") for i in range(50)], "b1"),
    _batch("d-1", [_msg("x", score="high")]),
    _batch("d-2", [_msg("x")]),  # sent by d-1: the device_id does not match
    b'{"messages": [%s]}' % json.dumps(_msg("x", features={"f": "a\\u0000b"})).encode().replace(b"\\\\u", b"\\u"),
    b'{"messages": [%s]}' % json.dumps(_msg("x")).encode().replace(b'"score": 0.25', b'"score": 1e999'),
    b'{"sent_at": ' + b"[" * 40 + b"]" * 40 + b', "messages": []}',
    b'{"messages": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}",  # RecursionError in the json module
    b"\xff\xfe not utf-8",
    b"[1, 2]",
    b"x" * (LIMIT + 1),
]


def _local(payload: bytes) -> tuple[bool, Any]:
    try:
        return True, ingest.parse_tuples(LIMIT, "d-1", payload)
    except Exception as exc:  # noqa: BLE001 - compared below
        return False, exc


def test_the_parser_process_answers_as_the_worker_would() -> None:
    pool = ParsePool(1)
    try:
        for payload in PAYLOADS:
            child = pool.submit(LIMIT, "d-1", payload)
            assert child is not None, pool.failure
            ok, got = child.result(timeout=60)
            want_ok, want = _local(payload)
            assert ok == want_ok, (payload[:80], got, want)
            if ok:  # the same tuples but for the time each side received them
                assert [r[:4] + r[5:] for r in got] == [r[:4] + r[5:] for r in want]
                assert all(type(r[4]) is str and len(r) == 11 for r in got)
            else:
                assert type(got) is type(want) and str(got) == str(want), (got, want)
        # a device id is framed by its length: one holding a newline and a whole batch is still
        # that device's (refused by name), never another device's batch
        odd = 'd-2\n{"messages": [' + json.dumps(_msg("x")) + "]}"
        for payload in (b" ", _batch(odd, [_msg("x")])):
            child = pool.submit(LIMIT, odd, payload)
            assert child is not None
            ok, got = child.result(timeout=60)
            with pytest.raises(FleetError) as want:
                ingest.parse_tuples(LIMIT, odd, payload)
            assert not ok and str(got) == str(want.value), (got, want.value)
        assert str(got).startswith("device_id:"), got
        assert not pool.broken
    finally:
        pool.close()


def _wait(cond: Any, secs: float = 30.0) -> None:
    deadline = time.monotonic() + secs
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.02)


def test_a_parser_process_that_dies_costs_no_batch(fleet: Fleet) -> None:  # noqa: F811 - the imported fixture
    q = IngestQueue(fleet, parse_processes=1)
    acked: list[str] = []
    stored: list[dict[str, Any]] = []
    q.on_acks = stored.extend
    q.start()
    try:
        def send(tag: str, n: int) -> None:
            for b in range(n):
                bid = f"{tag}{b}"
                raw = _batch("d-1", [_msg(f"{bid}-{i}") for i in range(20)], bid)
                assert q.submit("edgefleet/v1/devices/d-1/telemetry", raw, lambda bid=bid: acked.append(bid))

        send("a", 5)
        _wait(lambda: len(acked) == 5)
        assert q.pool.pids(), q.pool.failure  # the first batches went through the child
        for pid in q.pool.pids():
            os.kill(pid, signal.SIGKILL)
        send("b", 20)
        _wait(lambda: len(acked) == 25)
    finally:
        q.stop()
    assert sorted(acked) == sorted([f"a{b}" for b in range(5)] + [f"b{b}" for b in range(20)])
    assert all(body["result"] == "stored" for _dev, body in stored), stored
    assert len(_ids(fleet)) == 25 * 20
    assert q.pool.broken


@pytest.mark.parametrize("payload", PAYLOADS[1:4])
def test_a_batch_refused_in_the_child_is_refused_by_name(fleet: Fleet, payload: bytes) -> None:  # noqa: F811
    q = IngestQueue(fleet, parse_processes=1)
    acks: list[Any] = []
    q.on_acks = acks.extend
    assert q.submit("edgefleet/v1/devices/d-1/telemetry", payload, lambda: None)
    q.start()
    _wait(lambda: len(acks) == 1)
    q.stop()
    ok, want = _local(payload)
    assert not ok and isinstance(want, FleetError)
    assert acks[0][1]["result"] == "rejected" and acks[0][1]["reason"] == str(want)[:300], acks
    assert _ids(fleet) == []


def test_a_parser_process_that_hangs_is_given_up(fleet: Fleet) -> None:  # noqa: F811 - the imported fixture
    q = IngestQueue(fleet, parse_processes=1)
    q.CHILD_TIMEOUT = 1.0
    acked: list[str] = []
    q.start()
    stopped: list[int] = []
    try:
        for b in range(8):
            if b == 2:
                _wait(lambda: len(acked) == 2)
                stopped = q.pool.pids()
                assert stopped, q.pool.failure
                for pid in stopped:
                    os.kill(pid, signal.SIGSTOP)  # hung: alive, answering nothing
            raw = _batch("d-1", [_msg(f"h{b}-{i}") for i in range(20)], f"h{b}")
            assert q.submit("edgefleet/v1/devices/d-1/telemetry", raw, lambda b=b: acked.append(f"h{b}"))
        _wait(lambda: len(acked) == 8)
    finally:
        q.stop()
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:  # given up: the pool killed it already
                pass
    assert sorted(acked) == [f"h{b}" for b in range(8)]
    assert len(_ids(fleet)) == 8 * 20
    assert q.pool.broken and q.pool.failure is not None and "TimeoutError" in q.pool.failure, q.pool.failure


def test_the_parser_process_exits_when_the_server_is_sigkilled(tmp_path: Any) -> None:
    """A server process SIGKILLed with its parser process started leaves no process behind."""
    import subprocess
    import sys

    code = (
        "import os, sys, time\n"
        "from fleet_server.mqtt.parse_pool import ParsePool\n"
        "pool = ParsePool(1)\n"
        "child = pool.submit(1000, 'd-1', b'{}')\n"
        "child.result(timeout=60)\n"
        "print(' '.join(str(p) for p in pool.pids()), flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=str(tmp_path),
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert proc.stdout is not None
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert pids
        pids += [int(_fields(pid)[3]) for pid in pids]  # and the forkserver they were forked from
    finally:
        proc.kill()
        proc.wait()
    _wait(lambda: not any(_alive(pid) for pid in pids), secs=10)
    assert not [pid for pid in pids if _alive(pid)], "a parser process or its forkserver outlived the SIGKILLed server"


def _fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as fh:
        rest = fh.read().rsplit(")", 1)[1].split()
    return ["pid", "comm"] + rest  # [2] state, [3] ppid


def _alive(pid: int) -> bool:
    try:
        return _fields(pid)[2] != "Z"
    except FileNotFoundError:
        return False
