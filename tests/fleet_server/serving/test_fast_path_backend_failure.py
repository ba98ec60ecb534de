"""A failing or stuck scoring backend is met once per request on the WSGI fast path, not twice: the request is handed
to the Flask view, which re-raises the fast path's exception (fleet_server.api.predict.BACKEND_ERROR) instead of
scoring again, so a stuck scorer's 503 comes after one MicroBatcher timeout and a broken artifact is called once."""

from __future__ import annotations

import json
import tarfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

from werkzeug.test import Client

from fleet_server.api import predict
from fleet_server.api.fastpath import FastPath

PREDICT = "/api/v1/models/churn/predict"


def _setup(make_server: Any, make_bundle: Callable[..., Path]) -> tuple[Any, FastPath, dict[str, str], bytes]:
    server = make_server()
    bundle = make_bundle(1)
    fast_app = server.wsgi
    assert isinstance(fast_app, FastPath)
    token = server.fleet.secrets.admin_token
    auth = {"Authorization": f"Bearer {token}"}
    c = Client(fast_app)
    assert c.post("/api/v1/models", data=bundle.read_bytes(), headers=auth).status_code == 201
    with tarfile.open(bundle) as tf:
        record = json.load(tf.extractfile("manifest.json"))["canary"]["rows"][0]["input"]  # type: ignore[arg-type]
    one = json.dumps(record).encode()
    assert c.post(PREDICT, data=one, headers=auth, content_type="application/json").status_code == 200  # loads the scorer
    return server, fast_app, auth, one


def test_a_broken_backend_is_called_once_per_request_and_answered_as_the_app_does(
        make_server: Any, make_bundle: Callable[..., Path]) -> None:
    server, fast_app, auth, one = _setup(make_server, make_bundle)
    sc = predict._cached(server.fleet, "churn", None)
    assert sc is not None
    calls: list[int] = []
    real = sc.backend.predict

    def broken(features: Any, records: Any) -> Any:
        calls.append(1)
        raise RuntimeError("simulated artifact failure")

    sc.backend.predict = broken  # type: ignore[method-assign]
    try:
        handed = fast_app.handed_on
        r = Client(fast_app).post(PREDICT, data=one, headers=auth, content_type="application/json")
        assert fast_app.handed_on == handed + 1  # the fast path met the failure and handed the request on ...
        assert len(calls) == 1, calls             # ... and the view did not call the backend again
        plain = Client(fast_app.app).post(PREDICT, data=one, headers=auth, content_type="application/json")
        assert len(calls) == 2  # the app alone calls it once too
        assert (r.status_code, r.get_data()) == (plain.status_code, plain.get_data())  # same answer as the app alone
        assert r.status_code == 500 and r.json == {"error": "model churn v1: the server could not score this valid request: bundle "
                                                   "churn v1: its onnx artifact failed to score: RuntimeError: simulated artifact failure"}
    finally:
        sc.backend.predict = real  # type: ignore[method-assign]
    ok = Client(fast_app).post(PREDICT, data=one, headers=auth, content_type="application/json")
    assert ok.status_code == 200 and fast_app.fast >= 1  # served again, on the fast path; no stale error left behind
    assert Client(fast_app.app).post(PREDICT, data=one, headers=auth, content_type="application/json").status_code == 200


def test_a_stuck_backend_gives_one_503_after_one_timeout_not_two(make_server: Any, make_bundle: Callable[..., Path]) -> None:
    server, fast_app, auth, one = _setup(make_server, make_bundle)
    sc = predict._cached(server.fleet, "churn", None)
    assert sc is not None
    predict.score(sc, [json.loads(one)])  # the batcher exists
    batcher = predict._batchers[sc]
    batcher.timeout, batcher.max_wait = 1.0, 0.0
    real = sc.backend.predict
    entered, release = threading.Event(), threading.Event()

    def stuck(features: Any, records: Any) -> Any:
        entered.set()
        release.wait(10)
        return real(features, records)

    sc.backend.predict = stuck  # type: ignore[method-assign]
    leader = threading.Thread(target=lambda: predict.score(sc, [json.loads(one)]))
    try:
        leader.start()
        assert entered.wait(5)
        t0 = time.monotonic()
        r = Client(fast_app).post(PREDICT, data=one, headers=auth, content_type="application/json")
        took = time.monotonic() - t0
        assert r.status_code == 503 and b"within 1 s" in r.get_data(), (r.status_code, r.get_data())
        assert 0.9 < took < 1.8, took  # one timeout (1 s); handed on and scored again it was two (>= 2 s)
    finally:
        release.set()
        leader.join(10)
        sc.backend.predict = real  # type: ignore[method-assign]
    assert Client(fast_app).post(PREDICT, data=one, headers=auth, content_type="application/json").status_code == 200
