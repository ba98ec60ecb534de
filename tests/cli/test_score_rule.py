"""The one file rule (edgefleet.encoding): FileRule's fast path gives exactly what file_value says, cell by cell."""

from __future__ import annotations

import math
from typing import Any

import pytest

from edgefleet.encoding import FileRule, file_record, file_value
from edgefleet.errors import InputError

FIELDS = [
    {"name": "Contract", "type": "categorical", "categories": ["Month-to-month", "One year"], "missing": "reject", "unseen": "reject"},
    {"name": "Senior", "type": "categorical", "categories": [0, 1], "missing": "reject", "unseen": "reject"},
    {"name": "tenure", "type": "numeric", "missing": "impute"},
    {"name": "Paperless", "type": "boolean", "missing": "reject"},
]
CELLS: list[Any] = ["42", " -1.5e3 ", "", "  ", "One year", 0, 1, 7, 2.5, True, False, None, math.inf, "yes", "No", "TRUE", "0"]
EXPECT = {
    ("tenure", "42"): 42, ("tenure", " -1.5e3 "): -1500.0, ("tenure", ""): None, ("Senior", "1"): 1, ("Senior", ""): None,
    ("Contract", 0): "0", ("Contract", "One year"): "One year", ("Paperless", "yes"): True, ("Paperless", "No"): False,
    ("Paperless", "0"): False, ("tenure", 7): 7, ("Contract", 1): "1",  # (a key of True would equal 1)
}


@pytest.mark.parametrize("field", FIELDS, ids=[f["name"] for f in FIELDS])
def test_fast_rule_equals_the_cell_rule(field: dict[str, Any]) -> None:
    rule = FileRule([field])
    for cell in CELLS + ["1"]:
        try:
            want: Any = file_value(field, cell)
        except InputError as exc:
            with pytest.raises(InputError) as info:
                rule({field["name"]: cell})
            assert str(info.value) == str(exc)
            continue
        got = rule({field["name"]: cell, "extra": "ignored"})
        assert list(got) == [field["name"]]
        assert got[field["name"]] == want and type(got[field["name"]]) is type(want), (field["name"], cell)
        key = (field["name"], cell)
        if key in EXPECT and type(cell) is type(next(k for k in EXPECT if k == key)[1]):  # True == 1 as a dict key: same type only
            assert want == EXPECT[key] and type(want) is type(EXPECT[key])


def test_refusals_name_the_field() -> None:
    for raw, field, reason in [({"tenure": "forty"}, "tenure", "'forty' is not a number"), ({"tenure": "1_000"}, "tenure", "'1_000' is not a number"),
                               ({"Senior": "one"}, "Senior", "'one' is not a number"), ({"Paperless": "maybe"}, "Paperless", "'maybe' is not a boolean")]:
        fields = [f for f in FIELDS if f["name"] == field]
        with pytest.raises(InputError) as info:
            file_record(fields, raw)
        assert info.value.field == field and info.value.reason.startswith(reason)
    with pytest.raises(InputError, match="field 'Contract': missing field"):
        file_record(FIELDS, {"tenure": 1})
