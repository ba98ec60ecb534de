"""The Cloudera Data Science Workbench (CDSW / CML) model API shape, on edgefleet's REST scoring.

    POST /api/v1/models/<name>/cdsw[?version=N]     Authorization: Bearer <admin token>
    {"feature": "-1.36,-0.07,2.54,...,149.62"}                          -> {"result": 0, "probability": 0.05, "model_version": 1}
    {"accessKey": "...", "request": {"feature": "-1.36,...,149.62"}}    -> {"success": true, "response": {"result": 0, ...}}

A CDSW model function takes one JSON object; the founding article's fraud model reads
``args["feature"]``, a string of comma-separated numbers, and answers ``{"result": <0|1>}``.
Callers of CDSW's model service wrap that object as ``{"accessKey": ..., "request": {...}}`` and
read the function's answer from ``response`` of ``{"success": true, "response": {...}}``; this
route takes both shapes and answers in the shape it was asked in, so a client written for
either keeps working when it is pointed here. ``accessKey`` is accepted and ignored: the
fleet's admin bearer token authenticates (as newer CML's ``Authorization: Bearer <model API
key>`` does); an access key is an identifier, not a credential.

The values map positionally onto the model's input fields in manifest order (for the fraud
example ``V1..V28, Amount``: 29 values, no ``Time``). A wrong count, a value that is not a
finite number, or a missing ``feature`` is a 400 naming the field and the reason; scoring is
the device runtime's own Scorer (``fleet_server.api.predict``), so the answer is the label and
probability a device computes for the same row. ``result`` is the model's label (the positive
class when the probability is above the manifest's threshold), ``probability`` the
positive-class probability.
"""

from __future__ import annotations

import math
from typing import Any

from flask import Blueprint, jsonify, request

from fleet_server import validation
from fleet_server.api.auth import admin_required
from fleet_server.api.body import json_body
from fleet_server.api.predict import UnprocessableRecord
from fleet_server.api.predict import _scorer as cached_scorer
from fleet_server.errors import FleetError
from runtimes.python.errors import ScoringInputError

bp = Blueprint("cdsw", __name__, url_prefix="/api/v1")

MAX_FEATURE_CHARS = 64 * 1024  # one record: a few hundred numbers at most
FEATURE = {"type": "string", "maxLength": MAX_FEATURE_CHARS,
           "description": "comma-separated values, one per model input field in manifest order"}
ARGS = {"type": "object", "required": ["feature"], "properties": {"feature": FEATURE}}
REQUEST = {
    "type": "object", "maxProperties": 16,
    "properties": {"feature": FEATURE, "accessKey": {"type": "string", "maxLength": 256}, "request": ARGS},
    "description": "the model function's argument {\"feature\": ...}, or CDSW's envelope {\"accessKey\": ..., \"request\": {\"feature\": ...}}",
}
RESULT = {"type": "object", "required": ["result", "probability", "model_version"],
          "properties": {"result": {}, "probability": {"type": "number"}, "model_version": {"type": "integer"}}}
RESPONSE = {"oneOf": [RESULT, {"type": "object", "required": ["success", "response"],
                                "properties": {"success": {"const": True}, "response": RESULT}}]}


def parse_feature(text: str, fields: list[dict[str, Any]], where: str) -> dict[str, Any]:
    """The record a CDSW feature string describes; FleetError naming ``where`` and the reason."""
    parts = [p.strip() for p in text.split(",")]
    if parts == [""]:
        raise FleetError(f"{where}: empty; expected {len(fields)} comma-separated values ({_names(fields)})")
    if len(parts) != len(fields):
        raise FleetError(f"{where}: {len(parts)} values; the model takes {len(fields)} ({_names(fields)})")
    record: dict[str, Any] = {}
    for i, (raw, f) in enumerate(zip(parts, fields)):
        if f["type"] == "categorical":
            record[f["name"]] = raw
            continue
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise FleetError(f"{where}: value {i + 1} ({f['name']}) is {raw[:40]!r}, not a finite number")
        record[f["name"]] = value
    return record


def _names(fields: list[dict[str, Any]]) -> str:
    names = [f["name"] for f in fields]
    return ", ".join(names) if len(names) <= 6 else f"{', '.join(names[:3])}, ..., {names[-1]}"


@bp.post("/models/<name>/cdsw")
@admin_required
def cdsw_predict(name: str) -> Any:
    body = json_body(REQUEST)
    enveloped = "request" in body
    if enveloped and "feature" in body:
        raise FleetError("feature: give either {\"feature\": ...} or {\"request\": {\"feature\": ...}}, not both")
    args = body["request"] if enveloped else body
    where = "request.feature" if enveloped else "feature"
    if "feature" not in args:
        raise FleetError(f"{where}: required (a string of comma-separated values)")
    sc = cached_scorer(name, validation.int_arg(request.args.get("version"), "version"))
    record = parse_feature(args["feature"], sc.fields, where)
    try:
        pred = sc.score(record)
    except ScoringInputError as exc:
        raise UnprocessableRecord(f"{where}: {exc}") from exc
    label = pred.label.item() if hasattr(pred.label, "item") else pred.label
    out = {"result": label, "probability": pred.probability, "model_version": pred.version}
    return jsonify({"success": True, "response": out} if enveloped else out)
