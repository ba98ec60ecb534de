"""The Open Inference Protocol (KServe V2) REST routes, beside edgefleet's own predict.

    GET  /v2                                          server metadata           (public)
    GET  /v2/health/live, /v2/health/ready            liveness / readiness      (public)
    GET  /v2/models/<name>[/versions/<v>]             model metadata            (admin bearer)
    GET  /v2/models/<name>[/versions/<v>]/ready       model readiness           (admin bearer)
    POST /v2/models/<name>[/versions/<v>]/infer       inference                 (admin bearer)

A request carries one input per schema field, named as the field, shape ``[N]`` or ``[N, 1]``:
numeric fields as FP16/FP32/FP64 or (U)INT data, booleans as BOOL, string categoricals as
BYTES (``null`` is a missing value). MLServer's pandas codec (``"parameters": {"content_type":
"pd"}``) sends exactly this column form, so it is read the same way. Triton's binary tensor
extension is read too: the ``Inference-Header-Content-Length`` header gives the JSON header's
size and each input's ``parameters.binary_data_size`` its bytes (BYTES elements as 4-byte
little-endian length + UTF-8). Answers are always JSON ``data`` (a V2 client reads them whether
or not it asked for binary outputs).

Outputs: ``probability`` (FP64 ``[N]``, the positive class's; multi-class: the top class's),
``label`` (``[N]``, BYTES for string classes) and ``probabilities`` (FP64 ``[N, classes]``);
``outputs`` in the request selects among them. Scoring is ``fleet_server.api.predict``'s cached
Scorer over the same records (and its micro-batcher), so the probabilities equal /api/v1/models/<name>/predict's. Any
bad input is a 400 ``{"error": "inputs[<name>]: <reason>"}``; an unknown model or version a 404.
"""

from __future__ import annotations

import json
import math
import struct
import weakref
from typing import Any

import numpy as np
from flask import Blueprint, jsonify, request
from sqlalchemy import select

from edgefleet import __version__
from fleet_server.api.auth import admin_required, fleet
from fleet_server.api.body import MAX_JSON_BODY_BYTES
from fleet_server.api.predict import MAX_RECORDS, json_response
from fleet_server.api.predict import _scorer as cached_scorer
from fleet_server.api.predict import score as batched_score
from fleet_server.db import ModelVersion
from fleet_server.errors import FleetError, PayloadTooLarge
from fleet_server.validation import check, parse_json, parse_plain, plain_scalar
from runtimes.python.errors import ScoringInputError
from runtimes.python.scorer import Scorer

bp = Blueprint("v2", __name__, url_prefix="/v2")

NUMPY_TYPES: dict[str, str] = {
    "BOOL": "?", "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8", "INT8": "<i1", "INT16": "<i2",
    "INT32": "<i4", "INT64": "<i8", "FP16": "<f2", "FP32": "<f4", "FP64": "<f8",
}
DATATYPES = [*NUMPY_TYPES, "BYTES"]
NUMBER_TYPES = [t for t in NUMPY_TYPES if t != "BOOL"]
OUTPUT_NAMES = ["probability", "label", "probabilities"]

_PARAMS = {"type": "object", "maxProperties": 32}
TENSOR = {"type": "object", "required": ["name", "shape", "datatype"], "properties": {
    "name": {"type": "string", "minLength": 1, "maxLength": 256},
    "shape": {"type": "array", "minItems": 1, "maxItems": 2, "items": {"type": "integer", "minimum": 0, "maximum": MAX_RECORDS}},
    "datatype": {"type": "string", "enum": DATATYPES},
    "parameters": _PARAMS,
    "data": {"type": "array", "description": "row-major values, flat or nested"},
}}
INFER_REQUEST: dict[str, Any] = {"type": "object", "required": ["inputs"], "properties": {
    "id": {"type": "string", "maxLength": 256},
    "parameters": _PARAMS,
    "inputs": {"type": "array", "minItems": 1, "maxItems": 1024, "items": TENSOR},
    "outputs": {"type": "array", "maxItems": 8, "items": {"type": "object", "required": ["name"], "properties": {
        "name": {"type": "string", "enum": OUTPUT_NAMES}, "parameters": _PARAMS}}},
}, "description": "one input per model input field (shape [N] or [N, 1]); MLServer's pandas codec form is the same"}
_OUT_TENSOR = {"type": "object", "required": ["name", "shape", "datatype", "data"], "properties": {
    "name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}}, "datatype": {"type": "string"},
    "data": {"type": "array"}}}
INFER_RESPONSE = {"type": "object", "required": ["model_name", "model_version", "outputs"], "properties": {
    "model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {"type": "string"},
    "outputs": {"type": "array", "items": _OUT_TENSOR}}}
_META_TENSOR = {"type": "object", "required": ["name", "datatype", "shape"], "properties": {
    "name": {"type": "string"}, "datatype": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}}}}
MODEL_METADATA = {"type": "object", "required": ["name", "versions", "platform", "inputs", "outputs"], "properties": {
    "name": {"type": "string"}, "versions": {"type": "array", "items": {"type": "string"}}, "platform": {"type": "string"},
    "inputs": {"type": "array", "items": _META_TENSOR}, "outputs": {"type": "array", "items": _META_TENSOR}}}
SERVER_METADATA = {"type": "object", "required": ["name", "version", "extensions"], "properties": {
    "name": {"type": "string"}, "version": {"type": "string"}, "extensions": {"type": "array", "items": {"type": "string"}}}}
READY = {"type": "object", "required": ["ready"], "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}}}


class NotReady(FleetError):
    status = 503


@bp.get("")
def server_metadata() -> Any:
    return jsonify({"name": "edgefleet", "version": __version__, "extensions": ["binary_tensor_data"]})


@bp.get("/health/live")
def live() -> Any:
    return jsonify({"live": True})


@bp.get("/health/ready")
def ready() -> Any:
    from fleet_server.api.meta import readyz

    answer = readyz()
    if isinstance(answer, tuple):
        failing = answer[0].get_json().get("failing", [])
        raise NotReady(f"server: not ready ({', '.join(failing)} failing; see /readyz)")
    return jsonify({"ready": True})


def _field_datatype(f: dict[str, Any]) -> str:
    if f["type"] == "boolean":
        return "BOOL"
    if f["type"] == "categorical" and any(isinstance(c, str) for c in f.get("categories", [])):
        return "BYTES"
    return "FP64"


def _label_datatype(sc: Scorer) -> str:
    classes = sc.classes
    if all(isinstance(c, bool) for c in classes):
        return "BOOL"
    if all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        return "INT64"
    if all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in classes):
        return "FP64"
    return "BYTES"


def _metadata(name: str, version: int | None) -> Any:
    sc = cached_scorer(name, version)
    with fleet().session() as s:
        versions = list(s.scalars(select(ModelVersion.version).where(ModelVersion.name == name).order_by(ModelVersion.version)))
    return jsonify({
        "name": name, "versions": [str(v) for v in versions], "platform": f"edgefleet_{sc.backend_name}",
        "inputs": [{"name": f["name"], "datatype": _field_datatype(f), "shape": [-1]} for f in sc.fields],
        "outputs": [{"name": "probability", "datatype": "FP64", "shape": [-1]},
                    {"name": "label", "datatype": _label_datatype(sc), "shape": [-1]},
                    {"name": "probabilities", "datatype": "FP64", "shape": [-1, len(sc.classes)]}],
    })


@bp.get("/models/<name>")
@admin_required
def model_metadata(name: str) -> Any:
    return _metadata(name, None)


@bp.get("/models/<name>/versions/<id:version>")
@admin_required
def model_version_metadata(name: str, version: int) -> Any:
    return _metadata(name, version)


def _model_ready(name: str, version: int | None) -> Any:
    cached_scorer(name, version)  # 404 when not registered; a bundle that does not verify or load is not served at all
    return jsonify({"name": name, "ready": True})


@bp.get("/models/<name>/ready")
@admin_required
def model_ready(name: str) -> Any:
    return _model_ready(name, None)


@bp.get("/models/<name>/versions/<id:version>/ready")
@admin_required
def model_version_ready(name: str, version: int) -> Any:
    return _model_ready(name, version)


_REQUEST_KEYS = frozenset(INFER_REQUEST["properties"])
_TENSOR_KEYS = frozenset(("name", "shape", "datatype", "data"))
_DATATYPE_SET = frozenset(DATATYPES)


def _plain_request(v: Any) -> bool:
    """True when ``check(v, INFER_REQUEST)`` and ``clean`` have nothing to refuse in the parsed body ``v`` (from
    ``parse_plain``): the common shape, flat ``data`` of scalars. Anything else takes the full path, which names the field."""
    if type(v) is not dict or not _REQUEST_KEYS.issuperset(v):
        return False
    if "id" in v and not (type(v["id"]) is str and len(v["id"]) <= 256):
        return False
    params = v.get("parameters", {})
    if type(params) is not dict or len(params) > 32 or not all(plain_scalar(x) for x in params.values()):
        return False
    outs = v.get("outputs", [])
    if type(outs) is not list or len(outs) > 8 or not all(type(o) is dict and o.keys() == {"name"} and o["name"] in OUTPUT_NAMES
                                                          for o in outs):
        return False
    inputs = v.get("inputs")
    if type(inputs) is not list or not 1 <= len(inputs) <= 1024:
        return False
    for t in inputs:
        if type(t) is not dict or t.keys() != _TENSOR_KEYS:
            return False
        name, shape, dt, data = t["name"], t["shape"], t["datatype"], t["data"]
        if type(name) is not str or not 1 <= len(name) <= 256 or type(dt) is not str or dt not in _DATATYPE_SET:
            return False
        if type(shape) is not list or not 1 <= len(shape) <= 2 or not all(type(n) is int and 0 <= n <= MAX_RECORDS for n in shape):
            return False
        if type(data) is not list or not all(plain_scalar(x) for x in data):
            return False
    return True


def _checked(raw: bytes) -> dict[str, Any]:
    value = parse_plain(raw)
    if value is not None and _plain_request(value):
        return value  # type: ignore[no-any-return]
    return check(parse_json(raw), INFER_REQUEST, "")  # type: ignore[no-any-return]


def _body() -> tuple[dict[str, Any], bytes]:
    """The checked JSON header and the binary tail (empty without the binary extension)."""
    if (request.content_length or 0) > MAX_JSON_BODY_BYTES:
        raise PayloadTooLarge(f"body: {request.content_length} bytes, at most {MAX_JSON_BODY_BYTES} for an inference request")
    raw = request.get_data(cache=True)
    if len(raw) > MAX_JSON_BODY_BYTES:
        raise PayloadTooLarge(f"body: {len(raw)} bytes, at most {MAX_JSON_BODY_BYTES} for an inference request")
    header_len = request.headers.get("Inference-Header-Content-Length")
    if header_len is None:
        if not raw:
            raise FleetError("body: expected a JSON inference request")
        return _checked(raw), b""
    if not header_len.strip().isdigit() or int(header_len) > len(raw):
        raise FleetError(f"Inference-Header-Content-Length: {header_len[:20]!r} is not a byte count within the {len(raw)}-byte body")
    n = int(header_len)
    return _checked(raw[:n]), raw[n:]


def _flatten(data: Any, where: str) -> list[Any]:
    if type(data) is list and len(data) <= MAX_RECORDS and not any(isinstance(x, list) for x in data):
        return data  # already flat (the common case): the same values the loop below would collect
    out: list[Any] = []
    stack = [data]
    while stack:  # iterative: nesting is bounded by parse_json's depth limit, but no recursion is needed
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            out.append(item)
    if len(out) > MAX_RECORDS:
        raise FleetError(f"{where}: {len(out)} values, at most {MAX_RECORDS} per request")
    return out


def _from_binary(tensor: dict[str, Any], tail: bytes, offset: int, count: int, where: str) -> tuple[list[Any], int]:
    size = tensor.get("parameters", {}).get("binary_data_size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(tail):
        raise FleetError(f"{where}: parameters.binary_data_size {size!r} does not fit the {len(tail) - offset} binary bytes left")
    chunk = tail[offset:offset + size]
    dt = tensor["datatype"]
    if dt == "BYTES":
        values: list[Any] = []
        pos = 0
        while pos < len(chunk):
            if pos + 4 > len(chunk):
                raise FleetError(f"{where}: BYTES element {len(values)} has a truncated length prefix")
            (n,) = struct.unpack_from("<I", chunk, pos)
            if pos + 4 + n > len(chunk):
                raise FleetError(f"{where}: BYTES element {len(values)} claims {n} bytes past the tensor's end")
            try:
                values.append(chunk[pos + 4:pos + 4 + n].decode("utf-8"))
            except UnicodeDecodeError:
                raise FleetError(f"{where}: BYTES element {len(values)} is not UTF-8") from None
            pos += 4 + n
    else:
        item = np.dtype(NUMPY_TYPES[dt]).itemsize
        if size != count * item:
            raise FleetError(f"{where}: {size} binary bytes, shape {tensor['shape']} of {dt} needs {count * item}")
        values = np.frombuffer(chunk, dtype=NUMPY_TYPES[dt]).tolist()
    return values, offset + size


def _check_value(v: Any, dt: str, where: str, i: int) -> Any:
    if v is None:
        return None  # a missing value: the field's own missing-value rule decides
    if dt == "BYTES":
        if not isinstance(v, str):
            raise FleetError(f"{where}: element {i} is {type(v).__name__} {str(v)[:40]!r}; BYTES data are strings")
        return v
    if dt == "BOOL":
        if not isinstance(v, bool):
            raise FleetError(f"{where}: element {i} is {type(v).__name__} {str(v)[:40]!r}; BOOL data are true/false")
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise FleetError(f"{where}: element {i} is {type(v).__name__} {str(v)[:40]!r}, not a number ({dt})")
    if dt.startswith(("INT", "UINT")) and isinstance(v, float) and not v.is_integer():
        raise FleetError(f"{where}: element {i} is {v!r}, not an integer ({dt})")
    if isinstance(v, float) and not math.isfinite(v):
        raise FleetError(f"{where}: element {i} is {v!r}, not a finite number")
    try:
        return float(v)
    except OverflowError:  # an int beyond float's range (JSON integers have no size limit)
        raise FleetError(f"{where}: element {i} is an integer of {len(str(v))} digits, beyond the range of {dt}") from None


def _accepts(f: dict[str, Any], dt: str) -> bool:
    if f["type"] == "boolean":
        return dt == "BOOL"
    if _field_datatype(f) == "BYTES":
        return dt == "BYTES"
    return dt in NUMBER_TYPES


_FIELDS: "weakref.WeakKeyDictionary[Scorer, dict[str, tuple[dict[str, Any], frozenset[str]]]]" = weakref.WeakKeyDictionary()


def _fields(sc: Scorer) -> dict[str, tuple[dict[str, Any], frozenset[str]]]:
    """Each field of ``sc`` by name, with the datatypes ``_accepts`` takes for it (computed once per scorer)."""
    got = _FIELDS.get(sc)
    if got is None:
        got = _FIELDS[sc] = {f["name"]: (f, frozenset(dt for dt in DATATYPES if _accepts(f, dt))) for f in sc.fields}
    return got


def records_from(body: dict[str, Any], tail: bytes, sc: Scorer) -> list[dict[str, Any]]:
    """The records the request's inputs describe, one per row; FleetError naming the input."""
    fields = _fields(sc)
    columns: dict[str, list[Any]] = {}
    n_rows: int | None = None
    offset = 0
    for t in body["inputs"]:
        name, dt, shape = t["name"], t["datatype"], t["shape"]
        where = f"inputs[{name[:64]}]"
        if name not in fields:
            raise FleetError(f"{where}: not an input of {sc.name} v{sc.version}; it takes {', '.join(fields)}")
        if name in columns:
            raise FleetError(f"{where}: given twice")
        f, accepted = fields[name]
        if dt not in accepted:
            raise FleetError(f"{where}: datatype {dt}; the {f['type']} field takes {_field_datatype(f)}"
                             + (" or another number type" if _field_datatype(f) == "FP64" else ""))
        if len(shape) == 2 and shape[1] != 1:
            raise FleetError(f"{where}: shape {shape}; one value per row: [N] or [N, 1]")
        count = shape[0]
        if "data" in t:
            values = _flatten(t["data"], where)
        elif "binary_data_size" in t.get("parameters", {}):
            values, offset = _from_binary(t, tail, offset, count, where)
        else:
            raise FleetError(f"{where}: no data (give 'data', or the binary extension's parameters.binary_data_size)")
        if len(values) != count:
            raise FleetError(f"{where}: {len(values)} values for shape {shape}")
        if n_rows is not None and count != n_rows:
            raise FleetError(f"{where}: {count} rows, the inputs before it have {n_rows}")
        n_rows = count
        columns[name] = [_check_value(v, dt, where, i) for i, v in enumerate(values)]
    if offset != len(tail):
        raise FleetError(f"body: {len(tail) - offset} binary bytes after the JSON header belong to no input")
    missing = [n for n in fields if n not in columns]
    if missing:
        raise FleetError(f"inputs[{missing[0]}]: required (the model takes one input per field; missing: {', '.join(missing[:8])})")
    names = list(columns)
    return [dict(zip(names, row)) for row in zip(*(columns[n] for n in names))]


def _label(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def _infer(name: str, version: int | None) -> Any:
    body, tail = _body()
    return json_response(_answer(body, tail, cached_scorer(name, version)))


def fast_answer(sc: Scorer, raw: bytes) -> bytes:
    """The infer views' answer body for a JSON-only request ``raw`` on ``sc`` (fleet_server.api.fastpath); raises where
    the views would answer an error."""
    return (json.dumps(_answer(_checked(raw), b"", sc), separators=(",", ":")) + "\n").encode()


def _answer(body: dict[str, Any], tail: bytes, sc: Scorer) -> dict[str, Any]:
    records = records_from(body, tail, sc)
    try:
        preds = batched_score(sc, records)
    except ScoringInputError as exc:
        raise FleetError(f"inputs[{exc.field}]: {exc.reason}") from exc
    n, k = len(preds), len(sc.classes)
    tensors = {
        "probability": {"name": "probability", "shape": [n], "datatype": "FP64", "data": [p.probability for p in preds]},
        "label": {"name": "label", "shape": [n], "datatype": _label_datatype(sc), "data": [_label(p.label) for p in preds]},
        "probabilities": {"name": "probabilities", "shape": [n, k], "datatype": "FP64",
                          "data": [v for p in preds for v in p.probabilities]},
    }
    wanted = [o["name"] for o in body.get("outputs", [])] or OUTPUT_NAMES
    out: dict[str, Any] = {"model_name": sc.name, "model_version": str(sc.version)}
    if "id" in body:
        out["id"] = body["id"]
    out["outputs"] = [tensors[w] for w in dict.fromkeys(wanted)]
    return out


@bp.post("/models/<name>/infer")
@admin_required
def infer(name: str) -> Any:
    return _infer(name, None)


@bp.post("/models/<name>/versions/<id:version>/infer")
@admin_required
def infer_version(name: str, version: int) -> Any:
    return _infer(name, version)
