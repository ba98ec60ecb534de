"""REST scoring for callers that cannot embed a model, with the device runtime's own scorer.

Invalid records get a 422 naming the field; the scorer of each (model, version) is loaded once,
from the verified registered bundle. Concurrent small requests to one (model, version) share a
backend call through its ``MicroBatcher`` (fleet_server.batching): same answers, one record's
error stays in its own request.

fleet_server.api.fastpath answers this route's common request without Flask, through ``_cached``
and ``fast_answer`` (the view's own parsing, scoring and JSON), and hands anything else to the view.
"""

from __future__ import annotations

import json
import threading
import weakref
from typing import Any

from flask import Blueprint, Response, has_request_context, request

from edgefleet.errors import BundleError
from fleet_server import model_versions as registry
from fleet_server import validation
from fleet_server.api.auth import admin_required, fleet
from fleet_server.api.body import records_body
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


class BackendFailure(FleetError):
    """The model's own artifact failed to score records that passed validation (onnxruntime, LiteRT or pypmml raised)."""
    status = 500


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


BACKEND_ERROR = "edgefleet.backend_error"  # WSGI environ key: a scoring failure the fast path met, for the view to re-raise
_failed = threading.local()  # .exc: the last backend failure score() raised in this thread (fleet_server.api.fastpath reads it)


def score(sc: Scorer, records: list[Any]) -> list[Prediction]:
    """``sc.score_many(records)`` through the scorer's micro-batcher (ScoringInputError names the bad field).

    A failure of the backend itself (``BatchTimeout`` after 30 s, an artifact error) is not scored
    twice: when the WSGI fast path met it and handed the request to the view, the view's call here
    raises that same exception (so the app answers it as always) instead of waiting out a second
    timeout on the same stuck backend."""
    if has_request_context():
        prior = request.environ.pop(BACKEND_ERROR, None)
        if prior is not None:
            raise prior
    with _lock:
        b = _batchers.get(sc)
        if b is None:
            b = _batchers[sc] = MicroBatcher(sc)
    try:
        return b.score(records)
    except ScoringInputError:
        raise  # the record's fault: the view names its field
    except BundleError as exc:  # the verified artifact failed on valid features: the server's fault, not the caller's (was a 400)
        err = BackendFailure(f"model {sc.name} v{sc.version}: the server could not score this valid request: {exc}")
        _failed.exc = err
        raise err from exc
    except Exception as exc:
        _failed.exc = exc
        raise


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


def fast_answer(sc: Scorer, raw: bytes) -> bytes:
    """The view's answer body for ``raw`` on ``sc`` (fleet_server.api.fastpath); raises where the view would answer an error."""
    body = validation.parse_records(raw, validation.PREDICT_REQUEST)
    records = body if isinstance(body, list) else [body]
    if len(records) > MAX_RECORDS:
        raise FleetError("too many records")  # the view names the count
    return (json.dumps(_answer(body, score(sc, records)), separators=(",", ":")) + "\n").encode()
