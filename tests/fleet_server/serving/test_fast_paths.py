"""The scoring routes' fast body paths accept exactly what the full path (parse_json + check) accepts, and
answer anything else with the full path's own error naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fleet_server.api.v2 import INFER_REQUEST, _checked
from fleet_server.errors import FleetError
from fleet_server.validation import PREDICT_REQUEST, check, parse_json, parse_records

RECORD = {"Contract": "Month-to-month", "tenure": 3, "MonthlyCharges": 70.35, "Paperless": True, "Partner": None}
V2 = {"id": "r1", "parameters": {"content_type": "pd"}, "outputs": [{"name": "probability"}],
      "inputs": [{"name": "tenure", "shape": [2], "datatype": "FP64", "data": [3, 4.5]},
                 {"name": "Contract", "shape": [2, 1], "datatype": "BYTES", "data": ["Month-to-month", None]}]}


def _full(raw: bytes, schema: dict[str, Any]) -> Any:
    return check(parse_json(raw), schema, "")


@pytest.mark.parametrize("body", [RECORD, [RECORD, RECORD], [], {"x": "caf\u00e9"}])
def test_predict_fast_path_returns_what_the_full_path_returns(body: Any) -> None:
    raw = json.dumps(body, ensure_ascii=False).encode()
    assert parse_records(raw, PREDICT_REQUEST) == _full(raw, PREDICT_REQUEST) == body


@pytest.mark.parametrize("raw, field", [
    (b'{"tenure": "a\\u0000b"}', "tenure: contains a NUL character"),
    (b'{"tenure": "\\ud800"}', "tenure: contains a lone surrogate"),
    (b'{"tenure": 1e999}', "tenure: expected a finite number"),
    (b'{"tenure": NaN}', "body: not JSON"),
    (b'[' * 40 + b']' * 40, "nested deeper than 32 levels"),
    (b'"a string"', "expected an object or a list"),
    (b'[1, 2]', "[0]: expected an object"),
    (b'{"a": 1', "body: not JSON"),
    (b'\xff', "body: not UTF-8"),
])
def test_predict_bodies_the_fast_path_must_not_take_get_the_full_paths_error(raw: bytes, field: str) -> None:
    with pytest.raises(FleetError) as fast:
        parse_records(raw, PREDICT_REQUEST)
    with pytest.raises(FleetError) as full:
        _full(raw, PREDICT_REQUEST)
    assert str(fast.value) == str(full.value) and field in str(fast.value), (str(fast.value), field)


def test_v2_fast_path_returns_what_the_full_path_returns() -> None:
    raw = json.dumps(V2).encode()
    assert _checked(raw) == _full(raw, INFER_REQUEST) == V2


@pytest.mark.parametrize("edit, field", [
    (lambda b: b["inputs"][0].update(shape=[True]), "inputs[0].shape[0]"),
    (lambda b: b["inputs"][0].update(datatype="FP128"), "inputs[0].datatype"),
    (lambda b: b["inputs"][0].update(name=""), "inputs[0].name"),
    (lambda b: b["inputs"][0].update(shape=[1, 1, 1]), "inputs[0].shape"),
    (lambda b: b.update(inputs=[]), "inputs"),
    (lambda b: b.update(id=7), "id"),
    (lambda b: b.update(outputs=[{"name": "logits"}]), "outputs[0].name"),
    (lambda b: b["inputs"][1]["data"].append("a\u0000"), "inputs[1].data[2]: contains a NUL"),
])
def test_v2_bodies_the_fast_path_must_not_take_get_the_full_paths_error(edit: Any, field: str) -> None:
    body = json.loads(json.dumps(V2))
    edit(body)
    raw = json.dumps(body).encode()
    with pytest.raises(FleetError) as fast:
        _checked(raw)
    with pytest.raises(FleetError) as full:
        _full(raw, INFER_REQUEST)
    assert str(fast.value) == str(full.value) and str(fast.value).startswith(field), (str(fast.value), field)
