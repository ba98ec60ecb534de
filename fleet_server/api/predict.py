"""REST scoring for callers that cannot embed a model, with the device runtime's own scorer.

Invalid records get a 422 naming the field; the scorer of each (model, version) is loaded once,
from the verified registered bundle. Concurrent small requests to one (model, version) share a
backend call through its ``MicroBatcher`` (fleet_server.batching): same answers, one record's
error stays in its own request.

``PredictFastPath`` (fleet_server.serve wraps the Flask app in it) answers the common request,
``POST /api/v1/models/<name>/predict`` with the exact admin token, a Content-Length body of flat
records and a cached scorer, without Flask's request context, routing and Response objects, with
the same parsing, scoring and JSON as the view. Anything else, and any request that fails on the
way (bad token, bad body, bad record, unknown model, a failing backend), goes to the Flask app with
the body it already read, which answers it as it always did: the fast path never decides an error.
"""

from __future__ import annotations

import hmac
import io
import json
import re
import threading
import weakref
from typing import Any, Callable, Iterable

from flask import Blueprint, Flask, Response, request

from fleet_server import model_versions as registry
from fleet_server import validation
from fleet_server.api.auth import admin_required, fleet
from fleet_server.api.body import MAX_JSON_BODY_BYTES, records_body
from fleet_server.batching import MicroBatcher
from fleet_server.core import Fleet
from fleet_server.errors import FleetError
from runtimes.python.errors import ScoringInputError
from runtimes.python.scorer import Prediction, Scorer

bp = Blueprint("predict", __name__, url_prefix="/api/v1")
_lock = threading.Lock()
MAX_RECORDS = 10_000
_batchers: "weakref.WeakKeyDictionary[Scorer, MicroBatcher]" = weakref.WeakKeyDictionary()


class UnprocessableRecord(FleetError):
    status = 422


def _cached(f: Fleet, name: str, version: int | None) -> Scorer | None:
    """The cached scorer of (name, version), of the newest version when None; None when not cached yet."""
    with _lock:
        if version is None:
            version = f.latest_versions.get(name)
        sc: Scorer | None = f.scorers.get((name, version)) if version is not None else None
    return sc


def _scorer(name: str, version: int | None) -> Scorer:
    """The cached scorer; the newest version per name is cached too and reset by every upload."""
    f = fleet()
    sc = _cached(f, name, version)
    if sc is not None:
        return sc
    row = registry.get_version(f, name, version)
    sc = Scorer.from_bundle(registry.artifact_path(f, row.sha256), f.trusted_keys())
    with _lock:
        f.scorers[(row.name, row.version)] = sc
        if version is None:
            f.latest_versions[name] = row.version
    return sc


def score(sc: Scorer, records: list[Any]) -> list[Prediction]:
    """``sc.score_many(records)`` through the scorer's micro-batcher (ScoringInputError names the bad field)."""
    with _lock:
        b = _batchers.get(sc)
        if b is None:
            b = _batchers[sc] = MicroBatcher(sc)
    return b.score(records)


def json_response(value: Any) -> Response:
    """What ``jsonify`` answers (compact JSON and a newline), without its per-call provider work."""
    return Response(json.dumps(value, separators=(",", ":")) + "\n", mimetype="application/json")


@bp.post("/models/<name>/predict")
@admin_required
def predict(name: str) -> Any:
    body = records_body(validation.PREDICT_REQUEST)
    version = validation.int_arg(request.args.get("version"), "version")
    sc = _scorer(name, version)
    records = body if isinstance(body, list) else [body]
    if len(records) > MAX_RECORDS:
        raise FleetError(f"body: {len(records)} records; at most {MAX_RECORDS} per request")
    try:
        preds = score(sc, records)
    except ScoringInputError as exc:
        raise UnprocessableRecord(str(exc)) from exc
    return json_response(_answer(body, preds))


def _answer(body: Any, preds: list[Prediction]) -> Any:
    out = [{"probability": p.probability, "label": p.label, "model_version": p.version} for p in preds]
    return out if isinstance(body, list) else out[0]


_PATH = re.compile(r"/api/v1/models/([A-Za-z0-9._-]{1,200})/predict")
_QUERY = re.compile(r"(?:version=([1-9][0-9]{0,8}))?")  # canonical only: "+1", "01", " 1" take the full path
_JSON_HEADERS = "application/json"

StartResponse = Callable[..., Any]


class PredictFastPath:
    """WSGI middleware in front of the Flask app: the predict view's happy path without Flask (module docstring).

    It takes a request only when every check the full path makes is known to pass before it runs:
    the exact admin token (``is_admin``), no NUL in the path or query (the name and version patterns
    exclude it), a Content-Length within ``MAX_JSON_BODY_BYTES`` and no Transfer-Encoding, a cached
    scorer. The body then goes through the same ``parse_records`` and ``score`` as the view; if
    anything raises, the request is handed to Flask with its body, so errors keep their one source.
    """

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.fleet: Fleet = app.extensions["edgefleet"]
        self.fast = 0       # requests answered here, and handed to Flask (for tests and benches)
        self.handed_on = 0

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST" or "HTTP_TRANSFER_ENCODING" in environ:
            return self.app(environ, start_response)
        m = _PATH.fullmatch(environ.get("PATH_INFO", ""))
        q = _QUERY.fullmatch(environ.get("QUERY_STRING", "")) if m else None
        length = environ.get("CONTENT_LENGTH", "")
        if m is None or q is None or not (length.isascii() and length.isdigit()) or not 0 < int(length) <= MAX_JSON_BODY_BYTES:
            return self.app(environ, start_response)
        auth = environ.get("HTTP_AUTHORIZATION", "")
        token = self.fleet.secrets.admin_token
        if not (auth[:7] == "Bearer " and hmac.compare_digest(auth[7:].encode("utf-8", "surrogateescape"), token.encode())):
            return self.app(environ, start_response)
        version = int(q.group(1)) if q.group(1) else None
        sc = _cached(self.fleet, m.group(1), version)
        if sc is None:  # the first request of a (model, version) loads it through the view
            return self.app(environ, start_response)
        raw = environ["wsgi.input"].read(int(length))
        try:
            body = validation.parse_records(raw, validation.PREDICT_REQUEST)
            records = body if isinstance(body, list) else [body]
            if len(records) > MAX_RECORDS:
                raise FleetError("too many records")  # the view names the count
            data = (json.dumps(_answer(body, score(sc, records)), separators=(",", ":")) + "\n").encode()
        except Exception:  # noqa: BLE001 - the view answers every failure, as it would have without this path
            self.handed_on += 1
            environ["wsgi.input"] = io.BytesIO(raw)
            return self.app(environ, start_response)
        self.fast += 1
        start_response("200 OK", [("Content-Type", _JSON_HEADERS), ("Content-Length", str(len(data)))])
        return [data]
