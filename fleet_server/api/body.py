"""Request bodies and path/query arguments, read through ``fleet_server.validation`` only.

Routes never call ``request.get_json``: it recurses without a bound (100,000 nested brackets
were a 500) and accepts NaN and lone surrogates. ``json_body(schema)`` parses with the guards
and checks the route's schema, so a bad body is a 400 naming the field.
"""

from __future__ import annotations

from typing import Any

from flask import request
from werkzeug.routing import BaseConverter, ValidationError

from fleet_server.errors import FleetError, PayloadTooLarge
from fleet_server.validation import MAX_DB_INT, check, parse_json, parse_records

MAX_JSON_BODY_BYTES = 8 * 1024 * 1024  # a JSON body (the 512 MiB request limit is for bundle uploads)


def _raw_body() -> bytes:
    """The request's bytes, refused past ``MAX_JSON_BODY_BYTES`` (by Content-Length, and by size for chunked bodies)."""
    if (request.content_length or 0) > MAX_JSON_BODY_BYTES:
        raise PayloadTooLarge(f"body: {request.content_length} bytes, at most {MAX_JSON_BODY_BYTES} for a JSON body")
    raw = request.get_data(cache=True)
    if len(raw) > MAX_JSON_BODY_BYTES:  # chunked bodies carry no Content-Length
        raise PayloadTooLarge(f"body: {len(raw)} bytes, at most {MAX_JSON_BODY_BYTES} for a JSON body")
    return raw


def json_body(schema: dict[str, Any], *, optional: bool = False) -> Any:
    """The parsed, checked body; ``None`` for an empty body when ``optional``."""
    raw = _raw_body()
    if not raw:  # absent; whitespace alone is not JSON and is refused by parse_json
        if optional:
            return None
        raise FleetError("body: expected a JSON body")
    return check(parse_json(raw), schema, "")


def records_body(schema: dict[str, Any]) -> Any:
    """``json_body(schema)`` for a scoring body (one flat record or a list of them), with a fast path for the
    common shape: same limits, same answers (``validation.parse_records``)."""
    raw = _raw_body()
    if not raw:
        raise FleetError("body: expected a JSON body")
    return parse_records(raw, schema)


class IdConverter(BaseConverter):
    """``<id:name>``: a decimal integer in [0, 2**31 - 1] (an INTEGER column); anything else is a 404."""

    regex = r"[0-9]{1,10}"  # not \d: that also matches non-ASCII digits
    part_isolating = True

    def to_python(self, value: str) -> int:
        n = int(value)
        if n > MAX_DB_INT:
            raise ValidationError()
        return n

    def to_url(self, value: Any) -> str:
        return str(int(value))
