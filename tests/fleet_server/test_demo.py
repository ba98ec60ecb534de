"""The /demo blueprint without a browser: what it serves, what it refuses, the telemetry sink."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any, Callable

from edgefleet.bundle_format import open_bundle
from tests.fleet_server.conftest import Api


def test_demo_serves_the_newest_bundle_read_only_and_nothing_else(make_server: Any, make_bundle: Callable[..., Path]) -> None:
    api = Api(make_server())
    code, body, _ = api("GET", "/demo/bundle/current.json", token=None)
    assert code == 404 and body["error"].startswith("model: no registered model")
    api("POST", "/api/v1/models", raw=make_bundle(1).read_bytes())
    tar = make_bundle(2)
    api("POST", "/api/v1/models", raw=tar.read_bytes())
    code, cur, headers = api("GET", "/demo/bundle/current.json", token=None)
    assert code == 200 and (cur["name"], cur["version"], cur["base"]) == ("churn", 2, "bundle/churn/2/")
    assert cur["formats"] == ["onnx"] and cur["trusted_keys"][0].startswith("-----BEGIN PUBLIC KEY-----")
    assert headers["cache-control"] == "no-store"
    bundle = open_bundle(tar)
    for member in ("manifest.json", "signature", "artifacts/model.onnx"):
        code, data, _ = api("GET", f"/demo/bundle/churn/2/{member}", token=None)
        raw = data if isinstance(data, bytes) else json.dumps(data).encode()
        assert code == 200
        if member != "manifest.json":  # the JSON helper re-parses it; compare bytes for the others
            assert raw == bundle.files[member]
    code, data, _ = api("GET", "/demo/bundle/churn/2/manifest.json", token=None, headers={"Accept": "application/octet-stream"})
    assert hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).digest() == hashlib.sha256(bundle.files["manifest.json"]).digest()
    assert len(base64.b64decode(bundle.files["signature"])) == 64
    for path in ("/demo/bundle/churn/2/../../../secrets/admin-token", "/demo/bundle/churn/2/keys/private.pem", "/demo/bundle/churn/9/manifest.json",
                 "/demo/vendor/ort/package.json", "/demo/vendor/x/ort.min.mjs", "/demo/runtime/../app.py", "/demo/.hidden", "/demo/nope.html"):
        assert api("GET", path, token=None)[0] == 404, path
    assert api("POST", "/demo/bundle/churn/2/manifest.json", token=None)[0] == 405
    code, page, headers = api("GET", "/demo/", token=None)
    assert code == 200 and b"Churn Insight" in page and headers["content-type"].startswith("text/html")
    code, _, headers = api("GET", "/demo/runtime/edgefleet.mjs", token=None)
    assert code == 200 and headers["content-type"].startswith("text/javascript")
    code, _, headers = api("GET", "/demo/vendor/ort/ort-wasm-simd-threaded.wasm", token=None)
    assert code == 200 and headers["content-type"] == "application/wasm"


def test_demo_telemetry_sink_validates_like_ingest_and_deduplicates(make_server: Any) -> None:
    api = Api(make_server())
    msg = {"id": "a" * 32, "kind": "prediction", "created": 1764417600.5, "body": {"model": "churn", "model_version": 1, "score": 0.7, "label": 1}}
    batch = {"device_id": "web-1234", "sent_at": "2026-11-29T12:00:00Z", "messages": [msg]}
    assert api("POST", "/demo/telemetry", batch, token=None)[1] == {"accepted": 1, "duplicates": 0}
    assert api("POST", "/demo/telemetry", batch, token=None)[1] == {"accepted": 0, "duplicates": 1}
    code, body, _ = api("POST", "/demo/telemetry", {"messages": [{**msg, "kind": "nonsense"}]}, token=None)
    assert code == 400 and body["error"].startswith("messages[0].kind:")
    code, seen, _ = api("GET", "/demo/telemetry", token=None)
    assert seen["received"] == 1 and seen["duplicates"] == 1 and seen["recent"][0]["device_id"] == "web-1234"
    code, counters, _ = api("GET", "/api/v1/counters")
    assert counters.get("telemetry_accepted", 0) == 0, "the demo sink never writes the fleet's telemetry tables"
