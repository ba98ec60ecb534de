"""Hot model swap: stream-score follows a fleet assignment like a device; v2 published mid-stream switches at a batch boundary.

Real components: Tansu, the shared Spark local[2] session, a real fleet server (waitress + SQLite) with
its staged rollout, the device agent inside the job, SQLite as the operational database.
"""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.fleet_server.conftest import Api, enroll, make_server, wait_for  # noqa: F401 - make_server is a fixture
from tests.spark.conftest import table_rows
from tests.streaming.conftest import create_topic, make_events, produce


def _rollout(api: Api, version: int) -> None:
    code, r, _ = api("POST", "/api/v1/rollouts", {"model": "churn", "version": version, "steps": [100]})
    assert code == 201, r
    wait_for(lambda: api("GET", f"/api/v1/rollouts/{r['id']}")[1]["state"] == "completed", timeout=120, what=f"rollout of v{version}")


@pytest.mark.slow  # 3+ minutes with two rollouts mid-stream; make test-all (the default run has the SIGKILL/restart stream test)
def test_v2_published_mid_stream_later_rows_v2_earlier_v1_no_gap(spark: Any, tansu: Any, make_server: Any, make_bundle: Callable[..., Path],
                                                                  keypair: dict[str, Any], tmp_path: Path) -> None:
    from runtimes.spark.streaming import StreamConfig, event_id, run_stream

    server = make_server()
    api = Api(server)
    for v in (1, 2):
        code, body, _ = api("POST", "/api/v1/models", raw=make_bundle(v).read_bytes())
        assert code == 201, body
    cred = tmp_path / "stream-cred.json"
    cred.write_text(json.dumps(enroll(api, "stream-scorer-1")))
    _rollout_thread = threading.Thread(target=_rollout, args=(api, 1), daemon=True)
    _rollout_thread.start()

    topic = "events-swap"
    create_topic(tansu.bootstrap, topic, partitions=1)
    url = f"sqlite:///{tmp_path / 'ops.db'}?table=swap_scores"
    stop = threading.Event()
    cfg = StreamConfig(bootstrap=tansu.bootstrap, topic=topic, pubkey=str(keypair["public_path"]), output=url,
                       checkpoint=str(tmp_path / "ckpt"), trigger="500 milliseconds", max_offsets_per_trigger=150,
                       device_credential=str(cred), device_data_dir=str(tmp_path / "stream-device"))
    log = io.StringIO()
    result: dict[str, Any] = {}
    job = threading.Thread(target=lambda: result.update(res=run_stream(cfg, stream=log, session=spark, stop=stop)), daemon=True)
    job.start()
    pool = make_events(6000, seed=8, bad_every=10**9)
    produced: list[Any] = []
    swapped = threading.Event()

    def producer() -> None:  # ~60 events/s until v2 is installed, then 600 more: v2 always lands mid-stream
        stop_at = len(pool)
        for k in range(0, len(pool), 30):
            if k >= stop_at:
                break
            produce(tansu.bootstrap, topic, pool[k:k + 30])
            produced.extend(pool[k:k + 30])
            if swapped.is_set() and stop_at == len(pool):
                stop_at = k + 600
            time.sleep(0.5)

    hist = "SELECT count(*) FROM swap_scores_history"
    try:
        _rollout_thread.join(120)
        prod = threading.Thread(target=producer, daemon=True)
        prod.start()
        wait_for(lambda: len(produced) >= 300 and table_rows(url, hist)[0][0] >= 200, timeout=180, what="v1 rows")
        _rollout(api, 2)  # published and rolled out while events keep arriving
        swapped.set()
        assert prod.is_alive(), "the producer ran out of events before v2 was installed: the test proves nothing"
        prod.join(180)
        events = list(produced)
        try:
            wait_for(lambda: table_rows(url, hist)[0][0] == len(events), timeout=180, what=f"all {len(events)} events scored")
        except AssertionError as exc:
            counts = table_rows(url, "SELECT model_version, count(*) FROM swap_scores_history GROUP BY 1")
            raise AssertionError(f"{exc}; rows by version {counts}; job alive {job.is_alive()}; log: {log.getvalue()[-1500:]}") from None
    finally:
        stop.set()
        job.join(60)
    assert "res" in result, log.getvalue()[-2000:]
    rows = table_rows(url, "SELECT run_id, model_version, bundle_sha256 FROM swap_scores_history ORDER BY run_id")
    expected = [event_id(topic, ev.partition, ev.offset) for ev in sorted(events, key=lambda e: e.offset)]
    assert [r[0] for r in rows] == expected  # no gap, no duplicate
    versions = [r[1] for r in rows]
    first_v2 = versions.index(2)
    assert 0 < first_v2 < len(versions) - 1
    assert set(versions[:first_v2]) == {1} and set(versions[first_v2:]) == {2}, "earlier rows v1, later rows v2, one switch"
    assert len({r[2] for r in rows if r[1] == 1}) == 1 and len({r[2] for r in rows if r[1] == 2}) == 1
    assert {r[2] for r in rows if r[1] == 1} != {r[2] for r in rows if r[1] == 2}
    latest = table_rows(url, "SELECT count(*), count(DISTINCT entity_id) FROM swap_scores")
    assert latest[0][0] == latest[0][1] == len({ev.entity for ev in events})
