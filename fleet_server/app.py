"""Flask app factory: ``create_app(fleet)`` wires one blueprint per resource and JSON errors.

Every answer to bad input is ``{"error": "<field>: <reason>"}`` with a 4xx: our FleetError
carries its status, werkzeug's HTTP errors (404 route, 405, 413) keep theirs, and path or
query arguments holding a NUL (which PostgreSQL refuses in any string) are a 400 before a
view runs. An unexpected exception is logged with its traceback and answered with a JSON 500;
that is a bug to fix, and the fuzz suite (tests/fleet_server/test_fuzz.py) fails on any.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from edgefleet.errors import EdgefleetError
from fleet_server.api.body import IdConverter
from fleet_server.core import Fleet, ServerConfig
from fleet_server.errors import FleetError

log = logging.getLogger(__name__)


def create_app(fleet: Fleet | ServerConfig) -> Flask:
    if isinstance(fleet, ServerConfig):
        fleet = Fleet(fleet)
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = fleet.cfg.max_bundle_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.url_map.converters["id"] = IdConverter
    app.extensions["edgefleet"] = fleet
    from fleet_server.monitoring.gates import ml_canary_gate

    fleet.gates.register("ml_canary", ml_canary_gate)  # the only extra gate; see fleet_server.rollouts

    from fleet_server.api import artifacts, cdsw, dashboard, demo, devices, meta, models, monitoring, predict, retraining, rollouts, scores

    for mod in (meta, models, artifacts, devices, rollouts, predict, cdsw, demo, dashboard, monitoring, retraining, scores):
        app.register_blueprint(mod.bp)
    from fleet_server.c2 import api as c2

    app.register_blueprint(c2.bp)  # MiNiFi/NiFi agents: /c2-protocol (docs/minifi.md)
    from fleet_server.api import v2

    app.register_blueprint(v2.bp)  # Open Inference Protocol (KServe V2) clients: /v2 (fleet_server/api/v2.py)

    @app.before_request
    def refuse_nul_arguments() -> None:
        for where, items in (("path", (request.view_args or {}).items()), ("query", request.args.items(multi=True))):
            for key, value in items:
                if isinstance(value, str) and "\x00" in value:
                    raise FleetError(f"{key[:64]}: the {where} argument contains a NUL character")

    @app.errorhandler(FleetError)
    def fleet_error(exc: FleetError) -> Any:
        return jsonify({"error": str(exc)}), exc.status

    @app.errorhandler(EdgefleetError)
    def other_error(exc: EdgefleetError) -> Any:
        return jsonify({"error": str(exc)}), 400

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        return jsonify({"error": f"{exc.name}: {exc.description}"}), exc.code or 500

    @app.errorhandler(Exception)
    def server_bug(exc: Exception) -> Any:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return jsonify({"error": f"server: internal error ({type(exc).__name__}); this is a bug, see the server log"}), 500

    return app
