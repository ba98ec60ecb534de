"""Telemetry's quick decode (orjson, fleet_server.ingest._load) decides every payload exactly as the stdlib route
(validation.parse_json, then the same checks): the same rows, or the same error naming the field. Hostile raw
bytes are the point: what orjson refuses and json.loads accepts (big integers, deep nesting, overflowing floats)
must still get the old answer, and what orjson accepts must decode to the same values."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fleet_server import ingest
from fleet_server.errors import FleetError
from fleet_server.validation import parse_json

DEV = "dev-1"


def _msg(**body: Any) -> dict[str, Any]:
    b = {"device_id": DEV, "ts": "2026-12-03T10:00:00.000Z", "model": "churn", "model_version": 1, "score": 0.25, "label": 0,
         "entity_id": "C1", "features": {"tenure": 12, "Contract": "One year"}, **body}
    return {"id": "a" * 32, "kind": "prediction", "created": 1.7e9, "body": b}


def _batch(*msgs: dict[str, Any]) -> bytes:
    return json.dumps({"device_id": DEV, "messages": list(msgs)}).encode()


GOOD = _batch(_msg(), {**_msg(), "id": "b" * 32})
PAYLOADS: list[bytes] = [
    GOOD,
    _batch(_msg(features={"city": "Zürich", "emoji": "\U0001f600"})),                   # escaped non-ASCII (ensure_ascii)
    json.dumps({"device_id": DEV, "messages": [_msg(features={"city": "Zürich"})]}, ensure_ascii=False).encode(),  # raw UTF-8
    GOOD.replace(b'"score": 0.25', b'"score": NaN'),
    GOOD.replace(b'"score": 0.25', b'"score": Infinity'),
    GOOD.replace(b'"score": 0.25', b'"score": -Infinity'),
    GOOD.replace(b'"score": 0.25', b'"score": 1e400'),                                  # overflows to inf in json.loads
    GOOD.replace(b'"score": 0.25', b'"score": 1E-7'),
    GOOD.replace(b'"score": 0.25', b'"score": -0.0'),
    GOOD.replace(b'"tenure": 12', b'"tenure": 18446744073709551616'),                   # 2**64: past orjson's integers
    GOOD.replace(b'"tenure": 12', b'"tenure": 9007199254740993'),                        # 2**53 + 1: past MAX_SAFE_INT
    GOOD.replace(b'"tenure": 12', b'"tenure": -9223372036854775809'),                  # orjson: a float, silently
    GOOD.replace(b'"tenure": 12', b'"tenure": 18446744073709551615'),                   # 2**64 - 1
    GOOD.replace(b'"tenure": 12', b'"tenure": 123456789012345678901234567890'),
    GOOD.replace(b'"score": 0.25', b'"score": 0.1234567890123456789012'),
    GOOD.replace(b'"Contract": "One year"', b'"Contract": "12345678901234567890"'),     # 20 digits in a string
    GOOD.replace(b'"tenure": 12', b'"tenure": ' + b"[" * 1100 + b"]" * 1100),          # deeper than orjson's 1,024
    GOOD.replace(b'"tenure": 12', b'"tenure": ' + b"[" * 60 + b"]" * 60),
    GOOD.replace(b'"tenure": 12', b'"tenure": 12, "tenure": 13'),                       # a duplicate key: the last wins
    GOOD.replace(b'"Contract": "One year"', b'"Contract": "One\\u0000year"'),
    GOOD.replace(b'"Contract": "One year"', b'"Contract": "\\ud800"'),                   # a lone surrogate
    GOOD.replace(b'"Contract": "One year"', b'"Contract": "\\ud83d\\ude00"'),           # a valid pair
    GOOD.replace(b'"Contract": "One year"', b'"Contract": "One\tyear"'),                # a raw control character
    GOOD.replace(b'"Contract": "One year"', b'"Contract": "\xff\xfe"'),                 # invalid UTF-8
    b"\xef\xbb\xbf" + GOOD,                                                              # a UTF-8 BOM
    b"  \n" + GOOD + b"\n ",
    GOOD + b"x",
    GOOD[:-5],
    b"", b"   ", b"null", b"[]", b'"messages"', b"{}", b'{"messages": {}}',
    b'{"device_id": "other", "messages": []}',
]


def _outcome(fn: Any) -> Any:
    try:
        rows = fn()
    except FleetError as exc:
        return ("error", str(exc))
    return ("rows", [r[:4] + r[5:-1] + (json.loads(r[-1]),) for r in rows])  # received_at differs; body compared as JSON


@pytest.mark.parametrize("raw", PAYLOADS, ids=range(len(PAYLOADS)))
def test_the_quick_decode_answers_as_the_stdlib_route(raw: bytes) -> None:
    quick = _outcome(lambda: ingest.parse_tuples(1 << 20, DEV, raw))

    def stdlib() -> Any:
        return ingest.parse_tuples(1 << 20, DEV, parse_json(raw))

    assert quick == _outcome(stdlib), raw[:120]


def test_the_stored_body_is_compact_json_of_the_same_values_and_big_integers_still_encode() -> None:
    rows = ingest.parse_tuples(1 << 20, DEV, _batch(_msg(features={"city": "Zürich", "n": 3})))
    assert json.loads(rows[0][-1]) == _msg(features={"city": "Zürich", "n": 3})["body"] and ", " not in rows[0][-1]
    assert ingest._dumps({"big": 2**70, "s": "é"}) == '{"big":1180591620717411303424,"s":"\\u00e9"}'  # the stdlib fallback
