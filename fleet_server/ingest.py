"""Telemetry ingest: validate, then insert in batches, idempotent by message id.

The same function serves the HTTP batch POST and the MQTT bridge. A malformed or oversized
payload is rejected with a reason and counted (``telemetry_rejected``, ``telemetry_oversized``);
it never raises into the bridge's loop. Duplicates (a redelivery after a lost PUBACK) are
skipped by the primary key and counted as ``telemetry_duplicates``.

Where the time went per record (issue 13, profiled): the generic ``clean`` walk of every parsed
value, the schema walk, SQLAlchemy's per-row parameter processing (JSON and datetime
processors, ``RETURNING`` rows). The path is now:

1. ``parse_batch``: ``json.loads``; the whole-document ``clean`` walk is skipped only when it
   cannot find anything (no ``\\u0000`` or surrogate escape and no number that could overflow
   in the raw bytes, every message of the plain shape ``_plainly_valid`` accepts); otherwise it
   runs as before and names the field.
2. ``parse_tuples`` (the MQTT path: fleet_server/mqtt/parse_pool.py runs it in the parser process)
   makes the driver's final tuples at once, so the storing side runs no per-row Python;
   ``parse_rows`` makes dicts of the same values (the demo sink reads them).
3. ``insert_tuples``: one driver-level ``executemany`` of those tuples (SQLite), or ``COPY``
   straight into the table under a savepoint, falling back (on a unique violation) to ``COPY``
   into a temporary staging table and one ``INSERT ... SELECT ... ON CONFLICT (id) DO NOTHING``
   (PostgreSQL); the row counts those statements report are the rows they inserted, so two
   requests racing on one id cannot both count it as accepted. The body is stored as compact
   JSON text (no spaces), which every reader (``TelemetryRecord.body``) parses as before.
"""

from __future__ import annotations

import json
import operator
import re
from typing import Any

import orjson

from edgefleet.protocol import MAX_FEATURE_CHARS
from fleet_server.core import Fleet
from fleet_server.db import utcnow
from fleet_server.errors import FleetError
from fleet_server.validation import DEVICE_ID, DEVICE_ID_PATTERN, MAX_DB_INT, MAX_NAME_CHARS, MAX_SAFE_INT, TELEMETRY_MESSAGE, check, clean, parse_json

KINDS = {"prediction", "sketch", "outcome"}
MAX_MESSAGES = 5000


def _trim_features(body: dict[str, Any]) -> None:
    """Cut string feature values to ``MAX_FEATURE_CHARS``: the prediction is kept (the device was
    told it was received), only the stored copy of an overlong raw feature is shortened."""
    feats = body.get("features")
    if isinstance(feats, dict):
        for k, v in feats.items():
            if isinstance(v, str) and len(v) > MAX_FEATURE_CHARS:
                feats[k] = v[:MAX_FEATURE_CHARS]


_KINDS = frozenset(KINDS)
_DEVICE_ID = re.compile(DEVICE_ID_PATTERN.lstrip("^").rstrip("$"))
_NUM = (int, float)


def _small_int(v: Any, lo: int, hi: int) -> bool:
    return type(v) is int and lo <= v <= hi


def _plainly_valid(msg: Any) -> bool:
    """True only for a message ``check(msg, TELEMETRY_MESSAGE)`` accepts, in straight-line code.

    Sound, not complete: the common shape (what runtimes/python/telemetry.py sends) is accepted
    here at a fraction of the generic walker's cost; anything else (a sketch's score object, a
    long or unusual value, any doubt) answers False and goes through ``check``, which accepts or
    names the field exactly as before. tests/fleet_server/test_ingest_fastpath.py holds the two
    to the same answers on hostile variants.
    """
    if type(msg) is not dict:
        return False
    mid, kind, created, body = msg.get("id"), msg.get("kind"), msg.get("created"), msg.get("body")
    if type(mid) is not str or not 0 < len(mid) <= 64 or type(kind) is not str or kind not in _KINDS:
        return False
    if type(created) not in _NUM or not 0 <= created <= 1e11 or type(body) is not dict or len(body) > 64:  # type: ignore[operator]
        return False
    for k, v in body.items():
        if v is None and k != "device_id":  # null is allowed for every body field but device_id
            continue
        if k == "features":
            if type(v) is not dict or len(v) > 512:
                return False
            for fv in v.values():
                t = type(fv)
                if t is str:
                    if len(fv) > MAX_FEATURE_CHARS:
                        return False
                elif t is float:
                    if fv - fv != 0.0:  # NaN or an infinity (clean() refuses both)
                        return False
                elif t is int:
                    if not -MAX_SAFE_INT <= fv <= MAX_SAFE_INT:
                        return False
                elif fv is not None and t is not bool:
                    return False
        elif k == "score":
            if not ((type(v) is float and v - v == 0.0) or _small_int(v, -MAX_SAFE_INT, MAX_SAFE_INT)):
                return False
        elif k == "label":
            t = type(v)
            if not (t is bool or (t is str and len(v) <= 64) or (t is float and -MAX_SAFE_INT <= v <= MAX_SAFE_INT)
                    or _small_int(v, -MAX_SAFE_INT, MAX_SAFE_INT)):
                return False
        elif k == "model":
            if type(v) is not str or len(v) > MAX_NAME_CHARS:
                return False
        elif k == "model_version":
            if not _small_int(v, 0, MAX_DB_INT):
                return False
        elif k == "entity_id":
            if not ((type(v) is str and len(v) <= 256) or _small_int(v, -MAX_SAFE_INT, MAX_SAFE_INT)):
                return False
        elif k == "device_id":
            if type(v) is not str or not 0 < len(v) <= 64 or _DEVICE_ID.fullmatch(v) is None:
                return False
        else:  # any other field: at most 65,536 bytes of JSON, which a short scalar cannot exceed (12 bytes per char at most)
            t = type(v)
            if not (t is bool or (t is float and v - v == 0.0) or _small_int(v, -MAX_SAFE_INT, MAX_SAFE_INT) or (t is str and len(v) <= 5000)):
                return False
    return True


# A NUL or a lone surrogate, which ``clean`` refuses, can only reach a parsed string through a
# \\u escape in the raw text (a raw control character or invalid UTF-8 fails json.loads itself).
# Any match, false positives included (an escaped backslash before "u0000", a valid surrogate
# pair), takes the full walk. Infinities (a float that overflows) ``_plainly_valid`` refuses.
# orjson (``_load``) also turns an integer past 64 bits into a float, silently: any run of 19
# digits (int64 ends at 19) takes the full walk too, false positives (a long float, digits in a
# string) included.
_SUSPECT = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])|[0-9]{19}")
_SCALARS = (str, int, float, bool, type(None))
_std_dumps = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode  # parsed JSON has no cycles


def _dumps(body: Any) -> str:
    """The body as compact JSON text. orjson first (0.7 against 6.6 us per prediction message in
    the stdlib encoder, measured on the bench's messages: the parser process's largest cost after
    the decode); it refuses an integer past 64 bits, which the stdlib encoder writes as before.
    Either text parses back to the same body (orjson writes non-ASCII as UTF-8, not \\u escapes)."""
    try:
        return orjson.dumps(body).decode()
    except TypeError:
        return _std_dumps(body)


def _load(raw: bytes) -> tuple[Any, bool]:
    """(document, clean-walk still needed). Anything the quick route cannot decode goes through
    ``parse_json``, which decodes it the same way or raises the named error.

    The quick route is orjson (1.7 against 4.3 us per prediction message for ``json.loads``,
    measured on the bench's batches). It refuses more than ``json.loads`` does, never less: NaN
    and Infinity, integers past 64 bits, invalid UTF-8, raw control characters and nesting past
    1,024 all raise, and ``parse_json`` then answers as it always did; what it accepts it decodes
    to the same values (tests/fleet_server/test_ingest_fastpath.py)."""
    if _SUSPECT.search(raw) is None:
        try:
            return orjson.loads(raw), True
        except (ValueError, RecursionError):  # orjson.JSONDecodeError is a ValueError
            pass
    return parse_json(raw), False


def _checked(msg: Any, i: int, plain: bool) -> Any:
    if not plain:  # a plain message has no string over MAX_FEATURE_CHARS: nothing to trim
        if isinstance(msg, dict) and isinstance(msg.get("body"), dict):
            _trim_features(msg["body"])
        if not _plainly_valid(msg):
            check(msg, TELEMETRY_MESSAGE, f"messages[{i}]")
    return msg


def _row(device_id: str, msg: Any, i: int, now: Any, plain: bool) -> dict[str, Any]:
    body = _checked(msg, i, plain)["body"]
    score, label, entity = body.get("score"), body.get("label"), body.get("entity_id")
    return {
        "id": msg["id"], "device_id": device_id, "kind": msg["kind"], "created": float(msg["created"]), "received_at": now,
        "model": body.get("model"),
        "model_version": body.get("model_version"),
        "entity_id": str(entity) if entity is not None else None,
        "score": float(score) if isinstance(score, (int, float)) else None,
        "label": str(label) if label is not None else None,
        "body": body,
        "body_json": _dumps(body),
    }


def parse_batch(fleet: Fleet, device_id: str, raw: bytes | Any) -> list[dict[str, Any]]:
    """The rows of one telemetry batch, validated; raises FleetError naming the field."""
    return parse_rows(fleet.cfg.max_telemetry_bytes, device_id, raw)


def _validated(max_bytes: int, device_id: str, raw: bytes | Any) -> tuple[list[Any], list[bool]]:
    """The batch's messages and, per message, whether it is of the plain shape (checked already);
    raises FleetError naming the field for anything the batch itself gets wrong."""
    unwalked = False
    if isinstance(raw, (bytes, bytearray)):
        if len(raw) > max_bytes:
            raise FleetError(f"body: {len(raw)} bytes is over the limit of {max_bytes}")
        raw, unwalked = _load(bytes(raw))
    else:
        clean(raw)
    if not isinstance(raw, dict) or not isinstance(raw.get("messages"), list):
        if unwalked:
            clean(raw)  # a NUL or deep nesting anywhere is still named first, as before
        raise FleetError("messages: expected {\"device_id\": ..., \"messages\": [...]}")
    msgs = raw["messages"]
    plain = [_plainly_valid(m) for m in msgs] if len(msgs) <= MAX_MESSAGES else [False] * len(msgs)
    if unwalked and not (all(plain) and all(type(v) in _SCALARS for k, v in raw.items() if k != "messages")):
        # not the plain shape all through (a plain value is a finite scalar at depth <= 4, and the
        # raw text held no escape clean() could refuse): walk it as parse_json always did
        clean(raw)
    check(device_id, DEVICE_ID, "device_id")
    if "device_id" in raw and raw["device_id"] != device_id:
        raise FleetError(f"device_id: batch says {raw.get('device_id')!r} but was sent by {device_id!r}")
    if len(msgs) > MAX_MESSAGES:
        raise FleetError(f"messages: {len(msgs)} messages in one batch, the limit is {MAX_MESSAGES}")
    return msgs, plain


def parse_rows(max_bytes: int, device_id: str, raw: bytes | Any) -> list[dict[str, Any]]:
    """``parse_batch`` with the size limit given, as dicts (the demo sink and the tests read them)."""
    msgs, plain = _validated(max_bytes, device_id, raw)
    now = utcnow()
    return [_row(device_id, m, i, now, p) for i, (m, p) in enumerate(zip(msgs, plain))]


Row = tuple[Any, ...]  # the telemetry columns in _COLUMNS order, as the driver binds them


def parse_tuples(max_bytes: int, device_id: str, raw: bytes | Any) -> list[Row]:
    """The same validation as ``parse_rows``, but the rows are the driver's final tuples
    (``received_at`` already as text, the body as compact JSON): what the store binds as it is.

    Why tuples: profiled on bench/ingest.py, the worker spent its time outside the database
    unpickling the parser process's row dicts (twelve keys each) and building these tuples from
    them; a tuple of eleven values pickles and loads in a fraction of that, and the worker does
    no per-row Python at all. Both backends take the text timestamp (SQLite stores SQLAlchemy's
    format; PostgreSQL's text COPY parses it).
    """
    msgs, plain = _validated(max_bytes, device_id, raw)
    now = _sqlite_datetime(utcnow())
    out: list[Row] = []
    append = out.append
    for i, (m, p) in enumerate(zip(msgs, plain)):
        body = _checked(m, i, p)["body"]
        get = body.get
        score, label, entity = get("score"), get("label"), get("entity_id")
        append((m["id"], device_id, m["kind"], float(m["created"]), now, get("model"), get("model_version"),
                None if entity is None else str(entity), float(score) if isinstance(score, (int, float)) else None,
                None if label is None else str(label), _dumps(body)))
    return out


_COLUMNS = ("id", "device_id", "kind", "created", "received_at", "model", "model_version", "entity_id", "score", "label", "body")
_COLS = ", ".join(_COLUMNS)
_SQLITE_INSERT = f"INSERT INTO telemetry ({_COLS}) VALUES ({', '.join('?' * len(_COLUMNS))}) ON CONFLICT (id) DO NOTHING"
_PG_STAGE = "telemetry_stage"
_PG_CREATE_STAGE = (f"CREATE TEMPORARY TABLE IF NOT EXISTS {_PG_STAGE} "
                    "(LIKE telemetry INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
_PG_INSERT = (f"INSERT INTO telemetry ({_COLS}) SELECT {_COLS} FROM {_PG_STAGE} ORDER BY id "
              "ON CONFLICT (id) DO NOTHING")


def _sqlite_datetime(t: Any) -> str:
    """What SQLAlchemy's SQLite DateTime type stores, so the ORM reads the column back unchanged."""
    return str(t.isoformat(sep=" ", timespec="microseconds"))


def _insert_sqlite(dbapi: Any, rows: list[Row]) -> int:
    cur = dbapi.cursor()
    try:
        cur.executemany(_SQLITE_INSERT, rows)
        return int(cur.rowcount)  # executemany sums the rows inserted; ON CONFLICT DO NOTHING adds none
    finally:
        cur.close()


def _pg_copy(cur: Any, table: str, rows: list[Row]) -> None:
    with cur.copy(f"COPY {table} ({_COLS}) FROM STDIN") as copy:
        write = copy.write_row
        for r in rows:
            write(r)


def _insert_postgres(dbapi: Any, rows: list[Row]) -> int:
    """COPY straight into ``telemetry`` under a savepoint: with no id already stored (the common
    case) that is all, and every row was inserted. A unique violation (a redelivery, an id twice
    in the rows, or another writer racing on an id, which COPY waits for) rolls back to the
    savepoint, and the rows go through the staging table and ``ON CONFLICT (id) DO NOTHING``,
    whose row count is exact."""
    import psycopg

    rows = sorted(rows, key=_first)  # id order: concurrent writers take the unique index's locks in one order
    with dbapi.cursor() as cur:
        cur.execute("SAVEPOINT telemetry_copy")
        try:
            _pg_copy(cur, "telemetry", rows)
        except psycopg.errors.UniqueViolation:
            cur.execute("ROLLBACK TO SAVEPOINT telemetry_copy")
        else:
            cur.execute("RELEASE SAVEPOINT telemetry_copy")
            return len(rows)
        cur.execute(_PG_CREATE_STAGE)
        cur.execute(f"DELETE FROM {_PG_STAGE}")  # empty after each commit (ON COMMIT DELETE ROWS); this covers a second call in one transaction
        _pg_copy(cur, _PG_STAGE, rows)
        cur.execute(_PG_INSERT)
        return int(cur.rowcount)


_first = operator.itemgetter(0)


def insert_tuples(fleet: Fleet, rows: list[Row], session: Any = None) -> tuple[int, int]:
    """Insert, skipping ids already stored; returns (accepted, duplicates).

    With ``session`` the rows join the caller's transaction (the MQTT bridge commits many
    batches at once and acknowledges them only after that commit). An id twice in ``rows`` is
    inserted once: the primary key's conflict skips the second (no dedupe pass over the rows).
    """
    if session is None:
        with fleet.session() as s:
            return insert_tuples(fleet, rows, s)
    if not rows:
        return 0, 0
    s = session
    # the driver connection of the session's own transaction: the rows commit (or roll back) with it
    dbapi = s.connection().connection.driver_connection
    if fleet.engine.dialect.name == "postgresql":
        accepted = _insert_postgres(dbapi, rows)
    else:
        accepted = _insert_sqlite(dbapi, rows)
    dup = len(rows) - accepted
    if dup:
        fleet.bump(s, "telemetry_duplicates", dup)
    fleet.bump(s, "telemetry_accepted", accepted)
    return accepted, dup


def reject(fleet: Fleet, exc: FleetError, session: Any = None) -> None:
    name = "telemetry_oversized" if "over the limit" in str(exc) else "telemetry_rejected"
    if session is None:
        with fleet.session() as s:
            fleet.bump(s, name)
    else:
        fleet.bump(session, name)


def ingest(fleet: Fleet, device_id: str, raw: bytes | Any) -> tuple[int, int]:
    """Validate and store one batch; raises FleetError (and counts it) if the batch is refused."""
    try:
        rows = parse_tuples(fleet.cfg.max_telemetry_bytes, device_id, raw)
    except FleetError as exc:
        reject(fleet, exc)
        raise
    return insert_tuples(fleet, rows)
