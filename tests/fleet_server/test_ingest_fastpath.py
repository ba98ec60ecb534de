"""Ingest's straight-line check of the common telemetry message (issue 13) accepts only what the
generic schema check accepts: on the agent's own message shape and on hostile variants of every
field, ``_plainly_valid(m)`` implies ``check(m, TELEMETRY_MESSAGE)`` passes (no mock: both real)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from fleet_server.errors import FleetError
from fleet_server.ingest import _plainly_valid
from fleet_server.validation import MAX_DB_INT, MAX_SAFE_INT, TELEMETRY_MESSAGE, check

BASE: dict[str, Any] = {"id": "a" * 32, "kind": "prediction", "created": 1.7e9, "body": {
    "device_id": "dev-1", "ts": "2026-12-02T15:00:00.000Z", "model": "churn", "model_version": 3, "score": 0.42, "label": 1,
    "sample_rate": 1.0, "entity_id": "C00001", "features": {"tenure": 12, "Contract": "One year", "paperless": True, "x": None}}}

BAD_VALUES: list[Any] = [None, True, False, 0, -1, 2**31, 2**53, -(2**53), 2**70, 1.5, float("nan"), float("inf"), "", "x" * 65,
                         "x" * 257, "x" * 6000, "\U0001f600" * 5001, "bad id!", [], [1], {}, {"a": 1}, {"a": "x" * 70_000}]


def _variants() -> list[dict[str, Any]]:
    out = [copy.deepcopy(BASE)]
    for key in ("id", "kind", "created", "body"):
        for v in BAD_VALUES:
            m = copy.deepcopy(BASE)
            m[key] = v
            out.append(m)
    for key in ("device_id", "model", "model_version", "score", "label", "entity_id", "features", "ts", "sample_rate", "other"):
        for v in BAD_VALUES:
            m = copy.deepcopy(BASE)
            m["body"][key] = v
            out.append(m)
    for v in BAD_VALUES:
        m = copy.deepcopy(BASE)
        m["body"]["features"]["f"] = v
        out.append(m)
    many = copy.deepcopy(BASE)
    many["body"].update({f"k{i}": i for i in range(60)})
    wide = copy.deepcopy(BASE)
    wide["body"]["features"] = {f"f{i}": 1.0 for i in range(513)}
    out += [many, wide, {**copy.deepcopy(BASE), "kind": "sketch"}, {k: v for k, v in BASE.items() if k != "created"}]
    return out


def test_the_fast_check_accepts_only_what_the_schema_accepts() -> None:
    fast = 0
    for m in _variants():
        if _plainly_valid(m):
            fast += 1
            check(m, TELEMETRY_MESSAGE, "messages[0]")  # raises (fails the test) if the fast path accepted a bad message
        else:
            try:
                check(m, TELEMETRY_MESSAGE, "messages[0]")
            except FleetError:
                pass
    assert _plainly_valid(BASE) and fast > 50, fast  # the agent's shape, and most harmless variants, take the fast path


@pytest.mark.parametrize("key,value", [("model_version", MAX_DB_INT + 1), ("entity_id", MAX_SAFE_INT + 1), ("device_id", None), ("label", "x" * 65)])
def test_bad_fields_still_get_the_schema_error(key: str, value: Any) -> None:
    m = copy.deepcopy(BASE)
    m["body"][key] = value
    assert not _plainly_valid(m)
    with pytest.raises(FleetError, match=rf"messages\[0\]\.body\.{key}"):
        check(m, TELEMETRY_MESSAGE, "messages[0]")
