"""Micro-batching of concurrent scoring requests (fleet_server.batching), on the real Scorer and onnxruntime.

The guarantees: a batch's answers are bit-identical to scoring each request alone; an invalid
record gets its own error naming the field and never touches the other requests; a failing or
stuck backend call cannot hang a request.
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from edgefleet.errors import BundleError
from fleet_server.batching import BatchTimeout, MicroBatcher
from runtimes.python.errors import ScoringInputError
from runtimes.python.scorer import Scorer
from tests.fleet_server.conftest import Api


def _records(churn_data: dict[str, Any], sc: Scorer, n: int) -> list[dict[str, Any]]:
    names = [f["name"] for f in sc.fields]
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v.item() if hasattr(v, "item") else v) for k, v in r.items()}
            for r in churn_data["holdout"][names].head(n).to_dict("records")]


def _concurrently(n: int, call: Callable[[int], Any]) -> list[Any]:
    """``call(i)`` in ``n`` threads released together; each result or the exception it raised."""
    out: list[Any] = [None] * n
    gate = threading.Barrier(n)

    def run(i: int) -> None:
        gate.wait()
        try:
            out[i] = call(i)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert not any(t.is_alive() for t in threads), "a request hung"
    return out


@pytest.fixture()
def scorer(make_bundle: Callable[..., Path], keypair: dict[str, Any]) -> Scorer:
    return Scorer.from_bundle(make_bundle(1), keypair["public_path"])


def test_one_batch_equals_scoring_each_alone_and_a_bad_record_fails_alone(scorer: Scorer, churn_data: dict[str, Any]) -> None:
    recs = _records(churn_data, scorer, 9)
    requests: list[list[dict[str, Any]]] = [[r] for r in recs[:7]] + [recs[7:9]]  # 8 requests, 9 rows
    bad = dict(recs[0], tenure="three")  # a numeric field given a word
    requests.insert(3, [bad])
    # The leader waits (the previous batch was concurrent) until all 9 valid rows are queued: one backend call.
    b = MicroBatcher(scorer, max_wait=5.0, max_rows=9)
    b._last_size = 2
    got = _concurrently(len(requests), lambda i: b.score(requests[i]))
    assert isinstance(got[3], ScoringInputError) and got[3].field == "tenure", got[3]
    assert b.batches == 1 and b.requests == 8, (b.batches, b.requests)
    for i, req in enumerate(requests):
        if i != 3:
            assert got[i] == scorer.score_many(req), i  # bit-identical: == on every float, label and version
    assert [p.probability for p in got[8]] == [scorer.score(r).probability for r in recs[7:9]]


def test_a_failing_backend_call_fails_every_request_of_its_batch_and_the_batcher_recovers(scorer: Scorer,
                                                                                      churn_data: dict[str, Any]) -> None:
    recs = _records(churn_data, scorer, 6)
    b = MicroBatcher(scorer, max_wait=5.0, max_rows=6)
    b._last_size = 2
    real = scorer.backend.predict

    def broken(features: Any, records: Any) -> Any:
        raise RuntimeError("simulated artifact failure")

    scorer.backend.predict = broken  # type: ignore[method-assign]  # the backend fails; the batcher is what is tested
    try:
        got = _concurrently(6, lambda i: b.score([recs[i]]))
    finally:
        scorer.backend.predict = real  # type: ignore[method-assign]
    assert all(isinstance(g, BundleError) and "simulated artifact failure" in str(g) for g in got), got
    b.max_wait = 0.0  # the burst above made the batcher wait for company; a lone request need not
    assert b.score([recs[0]]) == scorer.score_many([recs[0]])  # nothing stranded: the next request is served


def test_a_stuck_backend_call_times_out_the_requests_queued_behind_it(scorer: Scorer, churn_data: dict[str, Any]) -> None:
    recs = _records(churn_data, scorer, 4)
    b = MicroBatcher(scorer, max_wait=0.0, timeout=0.3)
    real = scorer.backend.predict
    entered = threading.Event()

    def slow(features: Any, records: Any) -> Any:
        entered.set()
        time.sleep(1.0)
        return real(features, records)

    scorer.backend.predict = slow  # type: ignore[method-assign]
    try:
        first: list[Any] = []
        leader = threading.Thread(target=lambda: first.append(b.score([recs[0]])))
        leader.start()
        assert entered.wait(5)
        t0 = time.monotonic()
        with pytest.raises(BatchTimeout, match="within 0.3 s"):
            b.score([recs[1]])
        assert time.monotonic() - t0 < 0.9  # the follower gave up at its timeout, not when the stuck call ended
        leader.join(5)
    finally:
        scorer.backend.predict = real  # type: ignore[method-assign]
    assert first == [scorer.score_many([recs[0]])]
    assert b.score([recs[2]]) == scorer.score_many([recs[2]])  # the batcher serves again


def test_concurrent_http_requests_one_invalid_get_their_own_answers(make_server: Any, make_bundle: Callable[..., Path],
                                                                    keypair: dict[str, Any], churn_data: dict[str, Any]) -> None:
    """predict and V2 infer on the real server: the invalid request's error names its field; the rest equal Scorer.score."""
    api = Api(make_server())
    path = make_bundle(1)
    assert api("POST", "/api/v1/models", raw=path.read_bytes())[0] == 201
    sc = Scorer.from_bundle(path, keypair["public_path"])
    recs = _records(churn_data, sc, 16)
    bodies: list[Any] = list(recs)
    bodies[5] = dict(recs[5], MonthlyCharges="lots")  # odd: a V2 request
    bodies[6] = dict(recs[6], tenure=[3])  # even: a predict request

    def v2(rec: dict[str, Any]) -> dict[str, Any]:
        return {"inputs": [{"name": k, "shape": [1], "datatype": "BYTES" if isinstance(v, str) else "FP64", "data": [v]}
                           for k, v in rec.items()]}

    def call(i: int) -> Any:
        if i % 2:
            return api("POST", "/v2/models/churn/infer", v2(bodies[i]))
        return api("POST", "/api/v1/models/churn/predict", bodies[i])

    got = _concurrently(len(bodies), call)
    for i, (status, body, _) in enumerate(got):
        if i == 5:
            assert status == 400 and body["error"].startswith("inputs[MonthlyCharges]:"), body
            continue
        if i == 6:
            assert status == 422 and body["error"].startswith("field 'tenure':"), body
            continue
        want = sc.score(recs[i])
        assert status == 200, (i, body)
        prob = body["outputs"][0]["data"][0] if i % 2 else body["probability"]
        assert prob == want.probability, (i, prob, want)
