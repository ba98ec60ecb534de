"""Boundary validation: one schema per payload, checked before any field is used.

Every payload the server takes (HTTP bodies, query arguments, MQTT status and telemetry) is
read in two steps:

1. ``parse_json`` turns bytes into a value: strict UTF-8, no NaN/Infinity, at most
   ``MAX_DEPTH`` levels of nesting (guarded *while* parsing: Python's json recurses and raises
   ``RecursionError`` on deep input), no string with a lone surrogate or a NUL (PostgreSQL can
   store neither), every number finite.
2. ``check(value, schema, path)`` walks a small JSON Schema subset (type, properties,
   required, additionalProperties, items, min/maxItems, min/maxLength, pattern, minimum,
   maximum, exclusiveMaximum, enum, maxProperties) and raises
   ``FleetError("<field>: <reason>")``, which the API answers with a 4xx.

The schemas below are plain JSON Schema (2020-12, as OpenAPI 3.1 uses), so ``openapi.py``
publishes the very dicts the server checks against and the two cannot drift.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from edgefleet.manifest_schema import schema as _manifest_schema
from edgefleet.protocol import MAX_FEATURE_CHARS  # shared with the device: a feature value kept in telemetry
from fleet_server.errors import FleetError

MAX_DEPTH = 32                 # nesting levels of any JSON payload
MAX_DB_INT = 2**31 - 1         # versions, ids and serials are INTEGER (32 bit) columns on PostgreSQL
MAX_SAFE_INT = 2**53 - 1       # beyond this a JSON number is not an exact integer in JS clients
MAX_NAME_CHARS = 128           # group, tag and model names (the columns are String(128))
MAX_HEALTH_CHARS = 500
MAX_JSON_FIELD_BYTES = 16_384  # a free-form object stored per status (capabilities, last_install, ...)

DEVICE_ID_PATTERN = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"  # ASCII only: it is a topic level and a broker user name
NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_BAD_CHARS = re.compile("[\x00\ud800-\udfff]")


# --- parsing -------------------------------------------------------------------------------

def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(raw: bytes | str, what: str = "body", max_depth: int = MAX_DEPTH) -> Any:
    if isinstance(raw, (bytes, bytearray)):
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FleetError(f"{what}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    else:
        text = raw
    if not text.strip():
        raise FleetError(f"{what}: expected JSON, got an empty body")
    try:  # the C decoder counts its recursion, so 100,000 levels end here, not in a crash
        value = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise FleetError(f"{what}: JSON nested deeper than {max_depth} levels") from None
    except ValueError as exc:
        raise FleetError(f"{what}: not JSON ({exc})") from None
    clean(value, what, max_depth)
    return value


_SCALARS = (str, int, bool, type(None))


def _flat_record(v: Any) -> bool:
    """A dict of scalar values, every float finite: ``clean`` has nothing to refuse in it once the text holds no
    ``\\u`` escape (the only way JSON text can carry a NUL or a lone surrogate)."""
    return type(v) is dict and all(plain_scalar(x) for x in v.values())


def parse_plain(raw: bytes) -> Any:
    """``json.loads`` of UTF-8 text without a ``\\u`` escape (the only way JSON text carries a NUL or a lone
    surrogate), NaN/Infinity refused; ``None`` when it is not such text, or not JSON: take ``parse_json`` then.
    The caller still owes the depth and finite-number checks ``clean`` makes (its fast path accepts flat values only)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if "\\u" in text:
        return None
    try:
        return json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return None


def plain_scalar(x: Any) -> bool:
    """A JSON scalar ``clean`` accepts as it is (in text without ``\\u`` escapes): finite if a float."""
    t = type(x)
    return math.isfinite(x) if t is float else t in _SCALARS


def parse_records(raw: bytes, schema: dict[str, Any]) -> Any:
    """``check(parse_json(raw), schema, "")`` for a scoring body (``PREDICT_REQUEST``: a record or a list of records).

    Fast path: a flat record, or a list of at most ``schema["maxItems"]`` of them, in text without ``\\u``
    escapes is accepted as parsed; anything else goes through ``clean`` and ``check``, which name the field.
    """
    value = parse_plain(raw)
    if value is not None and (_flat_record(value) or (type(value) is list and len(value) <= schema.get("maxItems", 0)
                                                      and all(_flat_record(r) for r in value))):
        return value
    return check(parse_json(raw), schema, "")


def clean(value: Any, what: str = "body", max_depth: int = MAX_DEPTH) -> Any:
    """Refuse what no store can hold: deep nesting, lone surrogates, NUL, non-finite numbers.

    Iterative, so it is also safe on values that did not come through ``parse_json`` (MQTT).
    """
    root = "" if what == "body" else what  # a body's fields are named bare, as ``check`` names them
    stack: list[tuple[Any, str, int]] = [(value, root, 0)]
    while stack:
        v, path, depth = stack.pop()
        label = path or what
        if depth > max_depth:
            raise FleetError(f"{what}: JSON nested deeper than {max_depth} levels")
        if isinstance(v, str):
            _check_chars(v, label)
        elif isinstance(v, float):
            if not math.isfinite(v):
                raise FleetError(f"{label}: expected a finite number")
        elif isinstance(v, dict):
            for k, item in v.items():
                if not isinstance(k, str):
                    raise FleetError(f"{label}: object keys must be strings")
                _check_chars(k, label)
                stack.append((item, _field(path, k) if len(k) <= 64 else label, depth + 1))
        elif isinstance(v, list):
            stack.extend((item, f"{label}[{i}]", depth + 1) for i, item in enumerate(v))
    return value


def _check_chars(s: str, path: str) -> None:
    m = _BAD_CHARS.search(s)
    if m:
        what = "a NUL character" if m.group() == "\x00" else f"a lone surrogate \\u{ord(m.group()):04x}"
        raise FleetError(f"{path}: contains {what}")


# --- the schema subset ---------------------------------------------------------------------

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}
_ARTICLE = {"object": "an object", "array": "a list", "string": "a string", "integer": "an integer",
            "number": "a number", "boolean": "true or false", "null": "null"}


def _field(path: str, key: str) -> str:
    return key if path == "" else f"{path}.{key}"


def check(value: Any, schema: dict[str, Any], path: str = "body") -> Any:
    """Return ``value`` if it matches ``schema``; else raise ``FleetError("<path>: <reason>")``."""
    label = path or "body"
    types = schema.get("type")
    if types is not None:
        tlist = [types] if isinstance(types, str) else list(types)
        if not any(_TYPES[t](value) for t in tlist):
            raise FleetError(f"{label}: expected {' or '.join(_ARTICLE[t] for t in tlist)}, got {_describe(value)}")
    if "enum" in schema and value not in schema["enum"]:
        raise FleetError(f"{label}: {_short(value)} is not one of {schema['enum']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            raise FleetError(f"{label}: must not be empty" if schema["minLength"] == 1 else f"{label}: at least {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise FleetError(f"{label}: {len(value)} characters, at most {schema['maxLength']}")
        pat = schema.get("pattern")
        if pat and not re.fullmatch(pat.lstrip("^").rstrip("$"), value):
            raise FleetError(f"{label}: {_short(value)} must match {pat}")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise FleetError(f"{label}: {_short(value)} is below the minimum {schema['minimum']}")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            raise FleetError(f"{label}: {_short(value)} must be above {schema['exclusiveMinimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise FleetError(f"{label}: {_short(value)} is above the maximum {schema['maximum']}")
    elif isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            raise FleetError(f"{label}: at least {schema['minItems']} item(s)")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise FleetError(f"{label}: {len(value)} items, at most {schema['maxItems']}")
        if "items" in schema:
            for i, item in enumerate(value):
                check(item, schema["items"], f"{label}[{i}]")
    elif isinstance(value, dict):
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            raise FleetError(f"{label}: {len(value)} keys, at most {schema['maxProperties']}")
        for key in schema.get("required", []):
            if key not in value:
                raise FleetError(f"{_field(path, key)}: required")
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in props:
                check(item, props[key], _field(path, key))
            elif extra is False:
                raise FleetError(f"{_field(path, key[:40])}: unknown field; expected one of {sorted(props)}")
            elif isinstance(extra, dict):
                check(item, extra, _field(path, key[:40]))
    if "maxBytes" in schema and len(json.dumps(value)) > schema["maxBytes"]:  # our extension, stripped from the OpenAPI
        raise FleetError(f"{label}: {len(json.dumps(value))} bytes of JSON, at most {schema['maxBytes']}")
    return value


def _describe(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, (int, float)):
        return _short(v)
    names: dict[type, str] = {dict: "an object", list: "a list", str: f"the string {_short(v)}"}
    return names.get(type(v), type(v).__name__)


def _short(v: Any, n: int = 30) -> str:
    r = repr(v) if not isinstance(v, int) or isinstance(v, bool) or abs(v) < 10**30 else f"{str(v)[:8]}... ({len(str(abs(v)))} digits)"
    return r if len(r) <= n else r[: n - 3] + "..."


def public(schema: Any) -> Any:
    """The schema as published in OpenAPI: without our ``maxBytes`` extension."""
    if isinstance(schema, dict):
        return {k: public(v) for k, v in schema.items() if k != "maxBytes"}
    if isinstance(schema, list):
        return [public(v) for v in schema]
    return schema


# --- the payloads --------------------------------------------------------------------------

def _str(n: int, **kw: Any) -> dict[str, Any]:
    return {"type": "string", "maxLength": n, **kw}


def _int(lo: int, hi: int = MAX_DB_INT, nullable: bool = False) -> dict[str, Any]:
    return {"type": ["integer", "null"] if nullable else "integer", "minimum": lo, "maximum": hi}


NAME = _str(MAX_NAME_CHARS, minLength=1, pattern=NAME_PATTERN)
DEVICE_ID = {"type": "string", "minLength": 1, "maxLength": 64, "pattern": DEVICE_ID_PATTERN}
# a model name is what a signed manifest may carry: the manifest schema is the one source of the rule
MODEL_NAME = {"type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS, "pattern": _manifest_schema()["properties"]["name"]["pattern"]}
VERSION = _int(1)
NAMES = {"type": "array", "maxItems": 64, "items": _str(MAX_NAME_CHARS, minLength=1)}
FREE_OBJECT = {"type": "object", "maxProperties": 64, "maxBytes": MAX_JSON_FIELD_BYTES}

ENROLLMENT_TOKEN_REQUEST = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "group": _str(MAX_NAME_CHARS, minLength=1),
        "tags": {**NAMES, "description": "a list of tag strings (a string is not a list)"},
        "ttl_seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 366 * 86_400, "description": "seconds, at most a year"},
    },
}
ENROLL_REQUEST = {
    "type": "object", "required": ["token", "device_id"],
    "properties": {"token": _str(256, minLength=1), "device_id": DEVICE_ID},
}
CAPABILITIES = {"type": "object", "maxProperties": 32, "maxBytes": MAX_JSON_FIELD_BYTES,
                "properties": {"formats": {"type": "array", "maxItems": 32, "items": _str(32)},
                               "backends": {"type": "array", "maxItems": 32, "items": _str(32)}}}
LAST_INSTALL = {"type": ["object", "null"], "maxProperties": 32, "maxBytes": MAX_JSON_FIELD_BYTES,
                "properties": {"version": _int(0, nullable=True), "result": _str(1000, type=["string", "null"])}}
FALLBACK = {"type": ["object", "null"], "maxProperties": 8, "maxBytes": MAX_JSON_FIELD_BYTES,
            "description": "set when the active model failed on load and an older verified one runs",
            "properties": {"from_version": _int(0, nullable=True), "to_version": _int(0, nullable=True),
                           "reason": _str(1000, type=["string", "null"])}}
STATUS = {
    "type": "object", "maxProperties": 64,
    "description": "a device's reported state; unknown fields are ignored",
    "properties": {
        "device_id": DEVICE_ID,
        "ts": {"type": ["string", "number", "null"], "maxLength": 64},
        "active_model": {**_str(MAX_NAME_CHARS), "type": ["string", "null"]},
        "active_version": _int(0, nullable=True),
        "previous_version": _int(0, nullable=True),
        "health": {**_str(MAX_HEALTH_CHARS), "type": ["string", "null"]},
        "last_install": LAST_INSTALL,
        "capabilities": CAPABILITIES,
        "outbox": {**FREE_OBJECT, "type": ["object", "null"]},
        "transport": {**_str(32), "type": ["string", "null"]},
        "agent_version": {**_str(64), "type": ["string", "null"]},
        "fallback": FALLBACK,
        "store": {**FREE_OBJECT, "type": ["object", "null"]},
    },
}
_FEATURE_VALUE = {"type": ["string", "number", "boolean", "null"], "maxLength": MAX_FEATURE_CHARS}
TELEMETRY_BODY = {
    "type": "object", "maxProperties": 64,
    "properties": {
        "device_id": DEVICE_ID,
        "model": {**_str(MAX_NAME_CHARS), "type": ["string", "null"]},
        "model_version": {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_DB_INT},
        "entity_id": {"type": ["string", "integer", "null"], "maxLength": 256, "minimum": -MAX_SAFE_INT, "maximum": MAX_SAFE_INT},
        "score": {"type": ["number", "object", "null"], "maxBytes": 65_536,
                  "description": "a prediction's probability; a sketch's score histogram"},
        "label": {"type": ["string", "number", "boolean", "null"], "maxLength": 64, "minimum": -MAX_SAFE_INT, "maximum": MAX_SAFE_INT},
        "features": {"type": ["object", "null"], "maxProperties": 512, "additionalProperties": _FEATURE_VALUE},
    },
    "additionalProperties": {"maxBytes": 65_536},
}
TELEMETRY_MESSAGE = {
    "type": "object", "required": ["id", "kind", "created", "body"],
    "properties": {
        "id": _str(64, minLength=1),
        "kind": {"type": "string", "enum": ["outcome", "prediction", "sketch"]},
        "created": {"type": "number", "minimum": 0, "maximum": 1e11},
        "body": TELEMETRY_BODY,
    },
}
TELEMETRY_BATCH = {
    "type": "object", "required": ["messages"],
    "properties": {"device_id": DEVICE_ID,
                   "batch_id": {**_str(64, minLength=1), "description": "echoed in the server ack on MQTT (docs/protocol.md)"},
                   "messages": {"type": "array", "maxItems": 5000, "items": TELEMETRY_MESSAGE}},
}
SELECTOR = {"type": "object", "additionalProperties": False,
            "properties": {"groups": NAMES, "tags": NAMES}}
STEPS = {"type": "array", "minItems": 1, "maxItems": 20,
         "items": {"type": "number", "exclusiveMinimum": 0, "maximum": 100},
         "description": "rising percentages ending at 100"}
GATES = {"type": "object", "maxBytes": MAX_JSON_FIELD_BYTES, "properties": {
    "max_failure_ratio": {"type": "number", "minimum": 0, "maximum": 1},
    "step_timeout_seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 366 * 86_400},
    "ml": {"type": ["boolean", "object"], "maxProperties": 32}}}
ROLLOUT_REQUEST = {
    "type": "object", "required": ["model"], "additionalProperties": False,
    "properties": {"model": MODEL_NAME, "version": VERSION, "selector": SELECTOR, "steps": STEPS, "gates": GATES},
}
APPROVE_REQUEST = {
    "type": "object", "additionalProperties": False,
    "properties": {"selector": SELECTOR, "steps": STEPS, "gates": GATES, "by": _str(MAX_NAME_CHARS)},
}
MONITOR_RUN_REQUEST = {"type": "object", "properties": {"now": {"type": "number", "minimum": 0, "maximum": 1e11}}}
POLICY_REQUEST = {"type": "object", "maxProperties": 64, "description": "a partial monitoring policy; 400 names the bad field"}
PREDICT_REQUEST = {"type": ["object", "array"], "maxItems": 10_000, "items": {"type": "object"},
                   "description": "one record (an object of feature values) or a list of records"}


def int_arg(raw: str | None, name: str, lo: int = 1, hi: int = MAX_DB_INT) -> int | None:
    """A query argument that must be an integer in [lo, hi]; None when absent (``?version=`` is an error)."""
    if raw is None:
        return None
    text = raw.strip()
    if not re.fullmatch(r"[+-]?[0-9]{1,30}", text):
        raise FleetError(f"{name}: expected an integer, got {_short(raw)}")
    value = int(text)
    if not lo <= value <= hi:
        raise FleetError(f"{name}: {_short(value)} is outside [{lo}, {hi}]")
    return value
