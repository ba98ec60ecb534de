"""Hostile scoring bodies on a real server (waitress): huge integers, wrong types, 10 MB strings and deep
nesting get a 4xx naming the field, on predict and on V2 infer; 20 parallel requests, half of them bad,
leave the good ones' answers equal to a lone request's."""

from __future__ import annotations

import concurrent.futures as cf
import json
import tarfile
from pathlib import Path
from typing import Any, Callable

from tests.fleet_server.conftest import Api

_DATATYPE = {"numeric": "FP64", "categorical": "BYTES", "boolean": "BOOL"}


def _v2(fields: list[dict[str, Any]], record: dict[str, Any], name: str, datatype: str, data: list[Any]) -> dict[str, Any]:
    """One input per field from ``record``, with ``name``'s input replaced by (datatype, data)."""
    inputs = [{"name": f["name"], "shape": [1], "datatype": _DATATYPE[f["type"]], "data": [record[f["name"]]]}
              for f in fields if f["name"] != name]
    return {"inputs": inputs + [{"name": name, "shape": [len(data)], "datatype": datatype, "data": data}]}


def test_hostile_bodies_get_a_named_4xx_and_do_not_touch_good_requests(make_server: Any,
                                                                         make_bundle: Callable[..., Path]) -> None:
    bundle = make_bundle(1)
    api = Api(make_server())
    assert api("POST", "/api/v1/models", raw=bundle.read_bytes())[0] == 201
    with tarfile.open(bundle) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
    record = manifest["canary"]["rows"][0]["input"]
    numeric = next(f["name"] for f in manifest["input_schema"]["fields"] if f["type"] == "numeric")
    predict = "/api/v1/models/churn/predict"
    cases = [({**record, numeric: 10**400}, numeric), ({**record, numeric: [1, 2]}, numeric),
             ({**record, numeric: "x" * (10 * 1024 * 1024)}, ""), (json.loads("[" * 200 + "]" * 200), "nested")]
    for body, named in cases:
        code, r, _ = api("POST", predict, body)
        assert 400 <= code < 500 and named in r["error"], (code, r)
    for datatype, data in (("FP64", [10**400]), ("FP64", ["abc"]), ("BYTES", [7])):
        code, r, _ = api("POST", "/v2/models/churn/infer", _v2(manifest["input_schema"]["fields"], record, numeric, datatype, data))
        assert 400 <= code < 500 and numeric in r["error"], (datatype, code, r)

    alone = api("POST", predict, record)[1]
    bodies = [record if i % 2 == 0 else {**record, numeric: "abc"} for i in range(20)]
    with cf.ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda b: api("POST", predict, b), bodies))
    for i, (code, r, _) in enumerate(answers):
        if i % 2 == 0:
            assert code == 200 and r == alone, (i, code, r)
        else:
            assert code == 422 and numeric in r["error"], (i, code, r)
