"""Input validation: every bad record is refused with the field and the reason."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgefleet.encoding import encode_columns, encode_records
from edgefleet.errors import InputError

FIELDS = [
    {"name": "Contract", "type": "categorical", "categories": ["Month-to-month", "One year", "Two year"], "missing": "reject", "unseen": "reject"},
    {"name": "PaymentMethod", "type": "categorical", "categories": ["Card", "Check"], "missing": "unseen", "unseen": "ignore"},
    {"name": "tenure", "type": "numeric", "min": 0, "max": 72, "missing": "reject"},
    {"name": "TotalCharges", "type": "numeric", "min": 0, "max": 9000, "missing": "impute"},
    {"name": "Paperless", "type": "boolean", "min": 0, "max": 1, "missing": "reject"},
]
GOOD = {"Contract": "One year", "PaymentMethod": "Check", "tenure": 12, "TotalCharges": 1234.5, "Paperless": True}


def test_good_record_encodes_to_indices_and_values() -> None:
    row = encode_records(FIELDS, [GOOD, {**GOOD, "PaymentMethod": "Bitcoin", "TotalCharges": None, "Paperless": 0}])
    assert row.dtype == np.float64
    assert row[0].tolist() == [1.0, 1.0, 12.0, 1234.5, 1.0]
    assert row[1, 1] == -1.0 and math.isnan(row[1, 3]) and row[1, 4] == 0.0


@pytest.mark.parametrize(
    "change, field, reason",
    [
        ({"tenure": "12"}, "tenure", "expected a number, got str"),
        ({"tenure": float("inf")}, "tenure", "not finite"),
        ({"tenure": None}, "tenure", "missing and the model does not impute"),
        ({"tenure": True}, "tenure", "expected a number, got bool"),
        ({"Contract": "Three year"}, "Contract", "unseen category 'Three year'"),
        ({"Contract": None}, "Contract", "missing and the model has no rule"),
        ({"Paperless": "maybe"}, "Paperless", "expected a boolean"),
        ({"extra": 1}, "extra", "unexpected field"),
    ],
)
def test_bad_values_name_field_and_reason(change: dict, field: str, reason: str) -> None:
    with pytest.raises(InputError) as info:
        encode_records(FIELDS, [{**GOOD, **change}])
    assert info.value.field == field
    assert reason in str(info.value)


def test_missing_field_is_named() -> None:
    rec = dict(GOOD)
    del rec["tenure"]
    with pytest.raises(InputError, match="'tenure': row 0: missing field"):
        encode_records(FIELDS, [rec])


def test_columns_must_exist() -> None:
    with pytest.raises(InputError, match="'Contract': missing: the input has no such column"):
        encode_columns(FIELDS, {"tenure": [1]})
