"""The scoring routes' common request answered without Flask: WSGI middleware in front of the app.

    POST /api/v1/models/<name>/predict[?version=<v>]            fleet_server.api.predict.fast_answer
    POST /v2/models/<name>[/versions/<v>]/infer                 fleet_server.api.v2.fast_answer

``FastPath`` (fleet_server.serve puts it in front of the Flask app) takes a request only when every
check the Flask path makes before the view's body work is known to pass: the exact admin token (as
``auth.is_admin`` compares it), a name and version that hold no NUL and that the app's routes would
match, a Content-Length within ``MAX_JSON_BODY_BYTES`` and no Transfer-Encoding, no V2 binary
extension header, and a scorer already cached (the first request of a model loads it through the
view). It then calls the route module's ``fast_answer``: the view's own parsing, scoring and JSON,
without the request context, URL routing, before-request hooks and Response objects.

Anything else, and any request whose ``fast_answer`` raises (bad body, bad record, a failing
backend, ...), is handed to the Flask app with the body already read, and the app answers it as it
did before this path existed: the fast path never decides an error (a bad request is parsed twice;
only failures pay that). A failure of the backend itself is not scored twice: the view re-raises the
exception the fast path met (``predict.BACKEND_ERROR``), so a stuck scorer's 503 comes after one
30 s timeout, not two. tests/fleet_server/serving/test_predict_fast_path.py
checks byte-for-byte equal answers against the app alone.
"""

from __future__ import annotations

import hmac
import io
import re
from typing import Any, Callable, Iterable

from flask import Flask

from fleet_server.api import predict, v2
from fleet_server.api.body import MAX_JSON_BODY_BYTES
from fleet_server.core import Fleet
from runtimes.python.scorer import Scorer

StartResponse = Callable[..., Any]
_NAME = r"([A-Za-z0-9._-]{1,200})"  # what <name> matches, minus anything needing care (%, NUL, unicode)
_VERSION = r"([1-9][0-9]{0,8})"     # canonical and within MAX_DB_INT; "01", "+1" take the full path
# (path pattern, query pattern (group 1: version), handler); a path group 2 is the version
ROUTES: list[tuple[re.Pattern[str], re.Pattern[str], Callable[[Scorer, bytes], bytes]]] = [
    (re.compile(rf"/api/v1/models/{_NAME}/predict"), re.compile(rf"(?:version={_VERSION})?"), predict.fast_answer),
    (re.compile(rf"/v2/models/{_NAME}(?:/versions/{_VERSION})?/infer"), re.compile(r"()"), v2.fast_answer),
]


class FastPath:
    """WSGI middleware: the scoring routes' happy path without Flask (module docstring); everything else is ``app``'s."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.fleet: Fleet = app.extensions["edgefleet"]
        self.fast = 0       # requests answered here, and read then handed to the app (for tests and benches)
        self.handed_on = 0

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if (environ.get("REQUEST_METHOD") != "POST" or "HTTP_TRANSFER_ENCODING" in environ
                or "HTTP_INFERENCE_HEADER_CONTENT_LENGTH" in environ):
            return self.app(environ, start_response)
        path = environ.get("PATH_INFO", "")
        for pattern, query, handler in ROUTES:
            m = pattern.fullmatch(path)
            if m is not None:
                break
        else:
            return self.app(environ, start_response)
        q = query.fullmatch(environ.get("QUERY_STRING", ""))
        length = environ.get("CONTENT_LENGTH", "")
        if q is None or not (length.isascii() and length.isdigit()) or not 0 < int(length) <= MAX_JSON_BODY_BYTES:
            return self.app(environ, start_response)
        auth = environ.get("HTTP_AUTHORIZATION", "")
        token = self.fleet.secrets.admin_token
        if not (auth[:7] == "Bearer " and hmac.compare_digest(auth[7:].encode("utf-8", "surrogateescape"), token.encode())):
            return self.app(environ, start_response)
        v = (m.groups()[1:] + q.groups())
        version = next((int(x) for x in v if x), None)
        sc = predict._cached(self.fleet, m.group(1), version)
        if sc is None:
            return self.app(environ, start_response)
        raw = environ["wsgi.input"].read(int(length))
        predict._failed.exc = None
        try:
            data = handler(sc, raw)
        except Exception as exc:  # noqa: BLE001 - the app answers every failure, as it would have without this path
            self.handed_on += 1
            environ["wsgi.input"] = io.BytesIO(raw)
            if predict._failed.exc is exc:  # the backend failed, not the request: the view re-raises it, not re-scores
                environ[predict.BACKEND_ERROR] = exc
            predict._failed.exc = None
            return self.app(environ, start_response)
        self.fast += 1
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]
