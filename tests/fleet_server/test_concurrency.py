"""Parallel requests and hostile headers against a real waitress server, on SQLite and PostgreSQL.

Counters are exact under concurrency (no lost increment, no race on a counter's first row),
an id raced by many requests is stored and counted as accepted exactly once, a non-ASCII
Authorization header is a 401/403 and never a 500, and the server's own account names cannot
be enrolled as devices.
"""

from __future__ import annotations

import http.client
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.fleet_server.conftest import Api, enroll

N = 40


@pytest.fixture()
def api(make_server: Any, db_url: str | None) -> Api:
    return Api(make_server(db_url=db_url))


def _parallel(fn: Any, n: int = N) -> list[Any]:
    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(fn, range(n)))


def test_counters_and_accepted_rows_are_exact_under_parallel_requests(api: Api) -> None:
    dev = enroll(api, "racer")
    url = "/api/v1/devices/racer/telemetry"
    same = {"device_id": "racer", "messages": [{"id": "one-id", "kind": "prediction", "created": 1.0,
                                                "body": {"model": "churn", "model_version": 1, "score": 0.5}}]}
    results = _parallel(lambda i: api("POST", url, same, token=dev["token"]))  # a fresh server: every counter's first row races too
    assert [c for c, _, _ in results] == [200] * N, [r for r in results if r[0] != 200][:3]
    assert sum(b["accepted"] for _, b, _ in results) == 1, "one id, stored once, acknowledged as new once"
    assert sum(b["duplicates"] for _, b, _ in results) == N - 1
    bad = {"device_id": "racer", "messages": [{"id": "x", "kind": "weird", "created": 1, "body": {}}]}
    results = _parallel(lambda i: api("POST", url, bad, token=dev["token"]))
    assert all(c == 400 and b["error"].startswith("messages[0].kind") for c, b, _ in results), results[:3]
    fresh = _parallel(lambda i: api("POST", url, {"device_id": "racer", "messages": [{**same["messages"][0], "id": f"id-{i}"}]}, token=dev["token"]))
    assert all(c == 200 and b == {"accepted": 1, "duplicates": 0} for c, b, _ in fresh), fresh[:3]
    counters = api("GET", "/api/v1/counters")[1]
    assert counters["telemetry_rejected"] == N, counters
    assert counters["telemetry_accepted"] == N + 1 and counters["telemetry_duplicates"] == N - 1, counters


@pytest.mark.parametrize("value", [b"Bearer \xff\xfe", "Bearer é".encode(), b"Bearer \x80abc", "Bearer dev_\u00e9\u4e2d".encode()])
def test_a_non_ascii_authorization_header_is_refused_not_a_500(api: Api, value: bytes) -> None:
    enroll(api, "dev-a")
    host, port = api.server.url.split("//")[1].split(":")
    for method, path in [("GET", "/api/v1/devices"), ("GET", "/api/v1/devices/dev-a/assignment"), ("POST", "/api/v1/devices/dev-a/status"),
                         ("GET", "/api/v1/artifacts/" + "0" * 64), ("GET", "/metrics")]:
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.putrequest(method, path)
        conn.putheader("Authorization", value)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", "2")
        conn.endheaders(b"{}")
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        assert resp.status in (401, 403), (method, path, resp.status, body)
        assert b'"error"' in body


@pytest.mark.parametrize("device_id", ["edgefleet-server", "EDGEFLEET-admin", "admin", "edgefleet"])
def test_the_servers_own_account_names_cannot_be_enrolled(api: Api, device_id: str) -> None:
    code, tok, _ = api("POST", "/api/v1/enrollment-tokens", {"group": "g"})
    assert code == 201
    code, body, _ = api("POST", "/api/v1/devices/enroll", {"token": tok["token"], "device_id": device_id}, token=None)
    assert code == 400 and body["error"].startswith("device_id:") and "reserved" in body["error"], body
    code, cred, _ = api("POST", "/api/v1/devices/enroll", {"token": tok["token"], "device_id": "gw-1"}, token=None)
    assert code == 201, "a refused id does not spend the one-time token"
