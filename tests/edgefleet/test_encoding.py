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
        ({"Contract": 3}, "Contract", "expected a string category, got int"),
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


def test_record_encoder_matches_encode_records_on_generated_records() -> None:
    from edgefleet.encoding import RecordEncoder

    rng = np.random.default_rng(0)
    enc = RecordEncoder(FIELDS)
    choices = {
        "Contract": ["Month-to-month", "One year", "Two year", "Three year", None, 3],
        "PaymentMethod": ["Card", "Check", "Cash", None, float("nan")],
        "tenure": [0, 12, 71.5, None, float("inf"), "7", True, np.int64(4), float("nan")],
        "TotalCharges": [0.0, 8600.55, None, float("nan"), -1, "x"],
        "Paperless": [True, False, 0, 1, 2, "true", None],
    }
    for _ in range(600):
        rec = {k: v[rng.integers(len(v))] for k, v in choices.items()}
        try:
            expected = encode_records(FIELDS, [rec])
        except InputError as exc:
            with pytest.raises(InputError) as info:
                enc.encode_one(rec)
            assert str(info.value) == str(exc)
            continue
        np.testing.assert_array_equal(enc.encode_one(rec), expected)
