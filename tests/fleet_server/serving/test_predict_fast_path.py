"""The WSGI fast path for POST .../predict (fleet_server.api.predict.PredictFastPath) answers exactly as the Flask
app alone does, byte for byte, for good requests and for every kind of bad one, on a real server's app."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any, Callable

from werkzeug.test import Client

from fleet_server.api.predict import PredictFastPath
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
    assert isinstance(fast_app, PredictFastPath)  # what waitress serves
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
