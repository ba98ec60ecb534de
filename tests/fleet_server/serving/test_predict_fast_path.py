"""The WSGI fast path for predict and V2 infer (fleet_server.api.fastpath.FastPath) answers exactly as the Flask
app alone does, byte for byte, for good requests and for every kind of bad one, on a real server's app."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any, Callable

from werkzeug.test import Client

from fleet_server.api.fastpath import FastPath
from tests.fleet_server.conftest import Api

PREDICT = "/api/v1/models/churn/predict"


def test_fast_path_answers_byte_for_byte_as_the_flask_app(make_server: Any, make_bundle: Callable[..., Path]) -> None:
    server = make_server()
    api = Api(server)
    bundle = make_bundle(1)
    assert api("POST", "/api/v1/models", raw=bundle.read_bytes())[0] == 201
    with tarfile.open(bundle) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
    record = manifest["canary"]["rows"][0]["input"]
    numeric = next(f["name"] for f in manifest["input_schema"]["fields"] if f["type"] == "numeric")
    fast_app = server.wsgi
    assert isinstance(fast_app, FastPath)  # what waitress serves
    fast, plain = Client(fast_app), Client(fast_app.app)
    token = server.fleet.secrets.admin_token
    auth = {"Authorization": f"Bearer {token}"}

    def both(path: str, body: bytes | None, headers: dict[str, str], method: str = "POST") -> tuple[int, bytes]:
        got = [c.open(path, method=method, data=body, headers=headers, content_type="application/json") for c in (fast, plain)]
        a, b = got
        assert (a.status_code, a.headers.get("Content-Type"), a.get_data()) == \
               (b.status_code, b.headers.get("Content-Type"), b.get_data()), (path, body, headers)
        return a.status_code, a.get_data()

    one = json.dumps(record).encode()
    assert both(PREDICT, one, auth)[0] == 200  # the first request loads the scorer through the view
    before = fast_app.fast
    cases: list[tuple[str, bytes | None, dict[str, str], int]] = [
        (PREDICT, one, auth, 200),
        (PREDICT, json.dumps([record, record]).encode(), auth, 200),
        (PREDICT, b"[]", auth, 200),
        (PREDICT + "?version=1", one, auth, 200),
        (PREDICT + "?version=01", one, auth, 200),  # not canonical: the full path parses it
        (PREDICT + "?version=2", one, auth, 404),
        (PREDICT + "?version=x", one, auth, 400),
        (PREDICT + "?version=1%00", one, auth, 400),
        (PREDICT, json.dumps({**record, numeric: "abc"}).encode(), auth, 422),
        (PREDICT, json.dumps({**record, numeric: 10**400}).encode(), auth, 422),
        (PREDICT, json.dumps([record, {**record, numeric: [1]}]).encode(), auth, 422),
        (PREDICT, b'{"tenure": NaN}', auth, 400),
        (PREDICT, b"[" * 100 + b"]" * 100, auth, 400),
        (PREDICT, b'{"a": "\\u0000"}', auth, 400),
        (PREDICT, b"\xff", auth, 400),
        (PREDICT, b"", auth, 400),
        (PREDICT, one, {"Authorization": f"Bearer {token}x"}, 403),
        (PREDICT, one, {"Authorization": f"bearer  {token} "}, 200),  # accepted by the view's parsing, not the fast path's
        (PREDICT, one, {}, 401),
        ("/api/v1/models/nosuch/predict", one, auth, 404),
    ]
    for path, body, headers, status in cases:
        assert both(path, body, headers)[0] == status, (path, body, headers)
    assert both(PREDICT, None, auth, method="GET")[0] == 405
    assert fast_app.fast - before == 4  # the four canonical good requests; every other one was the app's
    assert fast_app.handed_on == 7  # the seven bad bodies and records it read and handed on (b"" has no length)
    code, answer, headers = api("POST", PREDICT, record)  # through waitress: its environ takes the fast path too
    assert code == 200 and headers["content-type"] == "application/json" and fast_app.fast - before == 5
    assert answer == json.loads(both(PREDICT, one, auth)[1])

    fields = manifest["input_schema"]["fields"]
    kinds = {"numeric": "FP64", "categorical": "BYTES", "boolean": "BOOL"}

    def v2(rec: dict[str, Any], **extra: Any) -> bytes:
        inputs = [{"name": f["name"], "shape": [1], "datatype": kinds[f["type"]], "data": [rec[f["name"]]]} for f in fields]
        return json.dumps({"inputs": inputs, **extra}).encode()

    infer, before = "/v2/models/churn/infer", fast_app.fast
    v2_cases: list[tuple[str, bytes, dict[str, str], int]] = [
        (infer, v2(record), auth, 200),
        (infer, v2(record, id="r1", outputs=[{"name": "probability"}], parameters={"content_type": "pd"}), auth, 200),
        ("/v2/models/churn/versions/1/infer", v2(record), auth, 200),
        ("/v2/models/churn/versions/01/infer", v2(record), auth, 200),
        ("/v2/models/churn/versions/2/infer", v2(record), auth, 404),
        ("/v2/models/nosuch/infer", v2(record), auth, 404),
        (infer + "?x=1", v2(record), auth, 200),
        (infer + "?x=%00", v2(record), auth, 400),
        (infer, v2({**record, numeric: "abc"}), auth, 400),
        (infer, v2({**record, numeric: 10**400}), auth, 400),
        (infer, v2(record, outputs=[{"name": "logits"}]), auth, 400),
        (infer, json.dumps({"inputs": []}).encode(), auth, 400),
        (infer, b"{", auth, 400),
        (infer, v2(record), {}, 401),
        (infer, v2(record), {**auth, "Inference-Header-Content-Length": "5"}, 400),
    ]
    for path, body, headers, status in v2_cases:
        assert both(path, body, headers)[0] == status, (path, body, headers)
    assert fast_app.fast - before == 3
    v2_code, v2_answer, _ = api("POST", infer, json.loads(v2(record)))
    assert v2_code == 200 and v2_answer["outputs"][0]["data"] == [answer["probability"]]  # V2 == predict
