"""The Open Inference Protocol (KServe V2) routes, driven by a real V2 client: NVIDIA's
``tritonclient[http]`` (the dev extra), against the real fleet server (waitress + SQLite).

The client sends its own request bodies (JSON ``data`` and its binary tensor extension), so the
routes are checked against what Triton/KServe clients actually send; the probabilities must be
exactly /api/v1/models/<name>/predict's on the same rows.
"""

from __future__ import annotations

import json
import math
import urllib.request
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from tests.fleet_server.conftest import Api
from tests.fleet_server.test_fuzz import _assert_clean, run_schemathesis, target  # noqa: F401 - target: the fuzz suite's server fixture

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is in the dev extra (make install)")
from tritonclient.utils import InferenceServerException  # noqa: E402 - after the importorskip


@pytest.fixture()
def served(make_server: Any, make_bundle: Callable[..., Path]) -> tuple[Api, Any]:
    api = Api(make_server())
    assert api("POST", "/api/v1/models", raw=make_bundle(1).read_bytes())[0] == 201
    assert api("POST", "/api/v1/models", raw=make_bundle(2).read_bytes())[0] == 201
    client = httpclient.InferenceServerClient(url=api.server.url.removeprefix("http://"))
    return api, client


def _rows(churn_data: dict[str, Any], fields: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    names = [f["name"] for f in fields]
    out = []
    for rec in churn_data["holdout"][names].head(n).to_dict("records"):
        out.append({k: (None if isinstance(v, float) and math.isnan(v) else v.item() if hasattr(v, "item") else v) for k, v in rec.items()})
    return out


def _inputs(fields: list[dict[str, Any]], rows: list[dict[str, Any]], binary: bool) -> list[Any]:
    inputs = []
    for f in fields:
        col = [r[f["name"]] for r in rows]
        if f["type"] == "categorical" and any(isinstance(c, str) for c in f.get("categories", [])):
            t, arr = httpclient.InferInput(f["name"], [len(rows)], "BYTES"), np.array(col, dtype=object)
        elif f["type"] == "boolean":
            t, arr = httpclient.InferInput(f["name"], [len(rows)], "BOOL"), np.array(col, dtype=bool)
        else:
            t, arr = httpclient.InferInput(f["name"], [len(rows), 1], "FP64"), np.array(col, dtype=np.float64).reshape(-1, 1)
        t.set_data_from_numpy(arr, binary_data=binary)
        inputs.append(t)
    return inputs


def test_a_triton_client_scores_like_predict(served: tuple[Api, Any], churn_data: dict[str, Any]) -> None:
    api, client = served
    auth = {"Authorization": f"Bearer {api.token}"}  # copied per call: the client writes its own headers into the dict it is given
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_server_metadata()["name"] == "edgefleet"
    assert client.is_model_ready("churn", headers=dict(auth)) and client.is_model_ready("churn", "1", headers=dict(auth))
    meta = client.get_model_metadata("churn", headers=dict(auth))
    assert meta["versions"] == ["1", "2"] and {o["name"] for o in meta["outputs"]} == {"probability", "label", "probabilities"}
    fields = api("GET", "/api/v1/models/churn/versions/1")[1]["manifest"]["input_schema"]["fields"]
    assert [i["name"] for i in meta["inputs"]] == [f["name"] for f in fields]
    rows = _rows(churn_data, fields, 40)
    code, expected, _ = api("POST", "/api/v1/models/churn/predict?version=1", rows)
    assert code == 200, expected
    for binary in (False, True):  # JSON data, and the client's default binary tensor extension
        res = client.infer("churn", _inputs(fields, rows, binary), model_version="1", request_id="r-7", headers=dict(auth),
                           outputs=[httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("probability", "label", "probabilities")])
        body = res.get_response()
        assert body["model_name"] == "churn" and body["model_version"] == "1" and body["id"] == "r-7"
        assert res.as_numpy("probability").tolist() == [e["probability"] for e in expected], f"binary={binary}"
        assert [str(x.decode() if isinstance(x, bytes) else x) for x in res.as_numpy("label").tolist()] == [str(e["label"]) for e in expected]
        probs = res.as_numpy("probabilities")
        assert probs.shape == (40, 2) and np.allclose(probs.sum(axis=1), 1.0) and probs[:, 1].tolist() == res.as_numpy("probability").tolist()
    newest = client.infer("churn", _inputs(fields, rows[:3], False), headers=dict(auth)).get_response()
    assert newest["model_version"] == "2"


def test_v2_errors_are_400s_naming_the_input(served: tuple[Api, Any], churn_data: dict[str, Any]) -> None:
    api, client = served
    auth = {"Authorization": f"Bearer {api.token}"}
    fields = api("GET", "/api/v1/models/churn/versions/1")[1]["manifest"]["input_schema"]["fields"]
    rows = _rows(churn_data, fields, 4)
    good = _inputs(fields, rows, False)
    cat = next(f for f in fields if f["type"] == "categorical")
    num = next(f for f in fields if f["type"] == "numeric")

    def infer(inputs: list[Any]) -> str:
        with pytest.raises(InferenceServerException) as exc:
            client.infer("churn", inputs, headers=dict(auth))
        assert exc.value.status() == "400", exc.value
        return str(exc.value.message())

    assert f"inputs[{num['name']}]: required" in infer([i for i in good if i.name() != num["name"]])
    wrong = httpclient.InferInput(cat["name"], [4], "FP32")
    wrong.set_data_from_numpy(np.zeros(4, dtype=np.float32), binary_data=False)
    msg = infer([wrong if i.name() == cat["name"] else i for i in good])
    assert f"inputs[{cat['name']}]: datatype FP32" in msg and "BYTES" in msg
    short = httpclient.InferInput(num["name"], [3], "FP64")
    short.set_data_from_numpy(np.zeros(3), binary_data=True)
    assert f"inputs[{num['name']}]: 3 rows, the inputs before it have 4" in infer([*(i for i in good if i.name() != num["name"]), short])
    unseen = httpclient.InferInput(cat["name"], [4], "BYTES")
    unseen.set_data_from_numpy(np.array(["no-such-category"] * 4, dtype=object), binary_data=False)
    if cat.get("unseen", "reject") == "reject":
        assert f"inputs[{cat['name']}]:" in infer([unseen if i.name() == cat["name"] else i for i in good])
    extra = httpclient.InferInput("nope", [4], "FP64")
    extra.set_data_from_numpy(np.zeros(4), binary_data=False)
    assert "inputs[nope]: not an input of churn v2" in infer([*good, extra])
    with pytest.raises(InferenceServerException) as exc:
        client.infer("no-such-model", good, headers=dict(auth))
    assert exc.value.status() == "404"
    with pytest.raises(InferenceServerException) as exc:
        client.infer("churn", good)  # no bearer token
    assert exc.value.status() == "401"


def test_v2_pandas_codec_request_and_raw_bodies(served: tuple[Api, Any], churn_data: dict[str, Any]) -> None:
    """MLServer's pandas codec form, written out as its ``PandasCodec.encode_request`` sends it, and malformed bodies."""
    api, _ = served
    fields = api("GET", "/api/v1/models/churn/versions/1")[1]["manifest"]["input_schema"]["fields"]
    rows = _rows(churn_data, fields, 5)
    inputs = []
    for f in fields:
        col = [r[f["name"]] for r in rows]
        is_bytes = isinstance(next(v for v in col if v is not None), str)
        inputs.append({"name": f["name"], "shape": [5, 1], "datatype": "BYTES" if is_bytes else "FP64", "data": col,
                       **({"parameters": {"content_type": "str"}} if is_bytes else {})})
    code, body, _ = api("POST", "/v2/models/churn/versions/1/infer", {"parameters": {"content_type": "pd"}, "inputs": inputs,
                                                                        "outputs": [{"name": "probability"}]})
    assert code == 200, body
    expected = api("POST", "/api/v1/models/churn/predict?version=1", rows)[1]
    assert [o["name"] for o in body["outputs"]] == ["probability"] and body["outputs"][0]["data"] == [e["probability"] for e in expected]
    for raw, needle in [(b"{", "body: not JSON"), (b'{"inputs": []}', "inputs: at least 1"),
                        (json.dumps({"inputs": [{**inputs[0], "shape": [5, 2]}]}).encode(), f"inputs[{inputs[0]['name']}]: shape [5, 2]"),
                        (json.dumps({"inputs": inputs, "outputs": [{"name": "logits"}]}).encode(), "outputs[0].name")]:
        code, body, _ = api("POST", "/v2/models/churn/infer", raw=raw)
        assert code == 400 and needle in body["error"], (raw[:80], body)
    req = urllib.request.Request(api.server.url + "/v2/models/churn/infer", data=json.dumps({"inputs": inputs}).encode() + b"\x00" * 8,
                                 headers={"Authorization": f"Bearer {api.token}", "Inference-Header-Content-Length": "999999999"}, method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code == 400 and "Inference-Header-Content-Length" in json.loads(err.value.read())["error"]


@pytest.mark.slow  # full route fuzz in make test-all; the default run fuzzes the API in test_fuzz.py and checks every V2 400 above
def test_fuzz_the_v2_routes(target: dict[str, Any]) -> None:
    """schemathesis against the OpenAPI entries of /v2 on a real server: no 5xx, every answer as documented."""
    fig = run_schemathesis(target, target["api"].token, name="v2", include=["--include-path-regex", r"^/v2"], max_examples=40, max_time=30)
    _assert_clean(fig)
