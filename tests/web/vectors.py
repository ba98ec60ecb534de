"""Shared test vectors: Python writes them, the JS runtime must reproduce them.

    python -m tests.web.vectors [--out tests/vectors]     # trains + compiles churn, writes churn.json

A vectors file holds, for a real compiled churn bundle (onnx + tfjs):

* ``schemas``: the bundle's input fields, plus a synthetic schema that exercises every policy
  the churn model does not use (reject, a NaN category, ``fill``, numeric categories, boolean);
* ``encoding``: cases ``{schema, records, encoded}`` or ``{schema, records, error: {field,
  reason, message}}``, computed by ``edgefleet.encoding.encode_records`` (NaN in ``encoded`` is
  ``null``; values JSON cannot hold are written ``{"$float": "nan" | "inf" | "-inf"}``);
* ``scoring``: records and the expected probabilities per runtime format: ``onnx`` from Python
  onnxruntime on the bundle's own ONNX artifact, ``tfjs`` from the source scikit-learn model
  (there is no Python TF.js runtime; the compile's parity gate bounds the artifact against it),
  with the bundle's identity (name, version, artifact sha256s) so a consumer can check it
  scores the same bundle.

The browser tests build these from the session's bundle (tests/web/conftest.py); the committed
``tests/vectors/churn.json`` is the same content from one CLI run, for JS work without Python.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from edgefleet.encoding import encode_records
from edgefleet.errors import InputError

ROOT = Path(__file__).resolve().parents[2]

SYNTHETIC = [
    {"name": "plan", "type": "categorical", "missing": "reject", "categories": ["basic", "pro", "it's"], "unseen": "reject"},
    {"name": "region", "type": "categorical", "missing": "impute", "categories": ["north", "south", None], "unseen": "ignore"},
    {"name": "tier", "type": "categorical", "missing": "impute", "categories": ["a", "b"], "fill": "b", "unseen": "ignore"},
    {"name": "code", "type": "categorical", "missing": "unseen", "categories": [1, 2, 3], "unseen": "reject"},
    {"name": "colour", "type": "categorical", "missing": "unseen", "unseen": "reject",
     "categories": ["red", "orange", "yellow", "green", "blue", "indigo", "violet", "black", "white"]},
    {"name": "active", "type": "boolean", "missing": "reject"},
    {"name": "age", "type": "numeric", "missing": "reject"},
    {"name": "income", "type": "numeric", "missing": "impute"},
]
SYNTHETIC_BASE = {"plan": "pro", "region": "south", "tier": "a", "code": 2, "colour": "blue", "active": True, "age": 41, "income": 52000.5}
NAN = {"$float": "nan"}
INF = {"$float": "inf"}
NINF = {"$float": "-inf"}


def decode(v: Any) -> Any:
    """Turn the JSON spelling of special floats back into floats (the JS side does the same)."""
    if isinstance(v, dict) and set(v) == {"$float"}:
        return float(v["$float"])
    if isinstance(v, dict):
        return {k: decode(x) for k, x in v.items()}
    if isinstance(v, list):
        return [decode(x) for x in v]
    return v


def _case(schema_name: str, fields: Sequence[Mapping[str, Any]], records: list[Any], about: str) -> dict[str, Any]:
    records = json.loads(json.dumps(records))  # exactly what a JSON consumer sees
    case: dict[str, Any] = {"about": about, "schema": schema_name, "records": records}
    try:
        enc = encode_records(fields, decode(records))
    except InputError as exc:
        case["error"] = {"field": exc.field, "reason": exc.reason, "message": str(exc)}
    else:
        case["encoded"] = [[None if math.isnan(x) else x for x in row] for row in enc.tolist()]
    return case


def _with(base: Mapping[str, Any], **changes: Any) -> dict[str, Any]:
    out = dict(base)
    for k, v in changes.items():
        if v is _DROP:
            out.pop(k, None)
        else:
            out[k] = v
    return out


_DROP = object()


def encoding_cases(churn_fields: Sequence[Mapping[str, Any]], churn_record: Mapping[str, Any]) -> list[dict[str, Any]]:
    c, s = churn_fields, SYNTHETIC
    cr, sb = dict(churn_record), SYNTHETIC_BASE
    cases = [
        _case("churn", c, [cr], "a valid churn record"),
        _case("churn", c, [_with(cr, Contract="Three year")], "unseen category under unseen=ignore encodes -1"),
        _case("churn", c, [_with(cr, Contract=None, TotalCharges=None)], "missing categorical (unseen) and missing numeric (impute)"),
        _case("churn", c, [_with(cr, tenure=NAN)], "NaN numeric is missing: imputed"),
        _case("churn", c, [_with(cr, tenure=INF)], "infinite numeric"),
        _case("churn", c, [_with(cr, MonthlyCharges=NINF)], "negative infinite numeric"),
        _case("churn", c, [_with(cr, tenure="12")], "numeric given as a string"),
        _case("churn", c, [_with(cr, tenure=True)], "numeric given as a boolean"),
        _case("churn", c, [_with(cr, tenure=[1, 2])], "numeric given as a list"),
        _case("churn", c, [_with(cr, Contract=2)], "categorical given as a number"),
        _case("churn", c, [_with(cr, Contract=False)], "categorical given as a boolean"),
        _case("churn", c, [_with(cr, Contract=INF)], "categorical given infinity"),
        _case("churn", c, [_with(cr, gender=_DROP)], "missing field"),
        _case("churn", c, [_with(cr, customerID="7590-VHVEG")], "unexpected field"),
        _case("churn", c, [cr, _with(cr, tenure="x"), _with(cr, gender=3)], "first error: column order, then row order"),
        _case("churn", c, [cr, "not a record"], "a record that is not an object"),
        _case("churn", c, [cr, None], "a null record"),
        _case("churn", c, [cr, _with(cr, Partner=_DROP, extra=1)], "missing field before unexpected field"),
        _case("churn", c, [_with(cr, MonthlyCharges=1e-05, TotalCharges=1.5e+16)], "small and large magnitudes"),
        _case("synthetic", s, [sb], "a valid synthetic record"),
        _case("synthetic", s, [_with(sb, plan=None)], "missing under reject (categorical)"),
        _case("synthetic", s, [_with(sb, plan="enterprise")], "unseen under reject, quotes"),
        _case("synthetic", s, [_with(sb, plan="it's")], "a category with a quote"),
        _case("synthetic", s, [_with(sb, plan='say "hi"')], "unseen with double quotes"),
        _case("synthetic", s, [_with(sb, plan="it's \"x\"\n")], "unseen with both quotes and a newline"),
        _case("synthetic", s, [_with(sb, colour="teal")], "unseen with more than 8 categories"),
        _case("synthetic", s, [_with(sb, region=None, tier=None)], "missing: NaN category index, fill index"),
        _case("synthetic", s, [_with(sb, region="east", tier="z")], "unseen under ignore"),
        _case("synthetic", s, [_with(sb, code=3)], "numeric category"),
        _case("synthetic", s, [_with(sb, code=2.5)], "numeric category, unseen float"),
        _case("synthetic", s, [_with(sb, code="2")], "string for a numeric category is unseen"),
        _case("synthetic", s, [_with(sb, code=True)], "boolean for a numeric category is unseen"),
        _case("synthetic", s, [_with(sb, code=None)], "missing numeric category (unseen policy)"),
        _case("synthetic", s, [_with(sb, active=False), _with(sb, active=1), _with(sb, active=0), _with(sb, active="TRUE"), _with(sb, active="false")], "boolean spellings"),
        _case("synthetic", s, [_with(sb, active=2)], "boolean out of range"),
        _case("synthetic", s, [_with(sb, active="yes")], "boolean as another string"),
        _case("synthetic", s, [_with(sb, active=None)], "missing boolean under reject"),
        _case("synthetic", s, [_with(sb, age=None)], "missing numeric under reject"),
        _case("synthetic", s, [_with(sb, age=NAN)], "NaN numeric under reject"),
        _case("synthetic", s, [_with(sb, income=None, age=0.1)], "impute numeric, fractional value"),
        _case("synthetic", s, [_with(sb, age={"years": 4})], "numeric given an object"),
        _case("synthetic", s, [_with(sb, plan=1e-05)], "float repr in a message: small"),
        _case("synthetic", s, [_with(sb, plan=1.5e-07)], "float repr in a message: exponent"),
        _case("synthetic", s, [_with(sb, plan=123.25)], "float repr in a message: plain"),
    ]
    return cases


def _records(frame: Any, columns: Sequence[str]) -> list[dict[str, Any]]:
    out = []
    for row in frame[list(columns)].itertuples(index=False):
        rec = {}
        for k, v in zip(columns, row):
            if isinstance(v, (float, np.floating)) and math.isnan(v):
                v = None
            elif isinstance(v, np.integer):
                v = int(v)
            elif isinstance(v, np.floating):
                v = float(v)
            rec[k] = v
        out.append(rec)
    return out


def scoring_section(result: Any, model: Any, frame: Any) -> dict[str, Any]:
    import onnxruntime as ort
    import pandas as pd

    m = result.manifest
    fields = m["input_schema"]["fields"]
    names = [f["name"] for f in fields]
    records = json.loads(json.dumps(_records(frame, names)))
    features = encode_records(fields, records)
    sess = ort.InferenceSession(result.files["artifacts/model.onnx"], providers=["CPUExecutionProvider"])
    onnx_p = np.asarray(sess.run(["probabilities"], {"features": features})[0], dtype=np.float64)
    src = pd.DataFrame([{k: (np.nan if v is None else v) for k, v in r.items()} for r in records], columns=names)
    sk_p = np.asarray(model.predict_proba(src), dtype=np.float64)
    return {
        "bundle": {"name": m["name"], "version": m["version"], "artifacts": {a["format"]: a["sha256"] for a in m["artifacts"]}},
        "classes": m["output"]["classes"], "threshold": m["output"]["threshold"], "tolerance": 1e-6,
        "records": records,
        "expected": {"onnx": onnx_p.tolist(), "tfjs": sk_p.tolist()},
        "reference": {"onnx": f"onnxruntime {ort.__version__} (Python) on artifacts/model.onnx",
                      "tfjs": "scikit-learn predict_proba of the source model (no Python TF.js runtime exists)"},
    }


def build(result: Any, model: Any, frame: Any) -> dict[str, Any]:
    fields = result.manifest["input_schema"]["fields"]
    names = [f["name"] for f in fields]
    first = json.loads(json.dumps(_records(frame.dropna(subset=names).iloc[:1], names)))[0]
    return {
        "about": "edgefleet shared test vectors; written by tests/web/vectors.py, read by runtimes/js/test/vectors.mjs and tests/web",
        "schemas": {"churn": fields, "synthetic": SYNTHETIC},
        "encoding": encoding_cases(fields, first),
        "scoring": scoring_section(result, model, frame),
    }


def write(vectors: Mapping[str, Any], out_dir: Path, name: str = "churn.json") -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    path.write_text(json.dumps(vectors, indent=1, allow_nan=False) + "\n")
    return path


def compile_churn(out_dir: Path | None = None, private_key: Any = None, model: Any = None) -> tuple[Any, Any, Any]:
    """Compile the churn RandomForest (trained here unless given) to onnx + tfjs; (result, model, frame).

    ``frame`` holds the rows the scoring vectors use: 200 held-out rows and 100 rows of a shifted
    population with 5% missing values that the compile never saw.
    """
    sys.path.insert(0, str(ROOT / "examples"))
    from train_churn import make_pipeline

    from compiler import compile
    from edgefleet_cli.samples.telco_churn import CATEGORICAL, LABEL, NUMERIC, make_telco_churn

    if private_key is None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        private_key = Ed25519PrivateKey.generate()
    df = make_telco_churn(4000, seed=1)
    train, holdout = df.iloc[:2800].reset_index(drop=True), df.iloc[2800:].reset_index(drop=True)
    if model is None:
        model = make_pipeline("rf").fit(train[CATEGORICAL + NUMERIC], train[LABEL])
    result = compile(model, holdout, targets=["onnx", "tfjs"], name="churn", version=1, private_key=private_key,
                     label=LABEL, out_dir=out_dir, created_at="2026-11-01T00:00:00Z")
    shifted = make_telco_churn(600, seed=99, price_shift=0.1, missing_rate=0.05)
    frame = __import__("pandas").concat([holdout.iloc[:200], shifted.iloc[:100]], ignore_index=True)
    return result, model, frame


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "vectors")
    args = ap.parse_args(argv)
    result, model, frame = compile_churn()
    print(write(build(result, model, frame), args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
