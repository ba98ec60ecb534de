"""Flask app factory: ``create_app(fleet)`` wires one blueprint per resource and JSON errors."""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from edgefleet.errors import EdgefleetError
from fleet_server.core import Fleet, ServerConfig
from fleet_server.errors import FleetError


def create_app(fleet: Fleet | ServerConfig) -> Flask:
    if isinstance(fleet, ServerConfig):
        fleet = Fleet(fleet)
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = fleet.cfg.max_bundle_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["edgefleet"] = fleet

    from fleet_server.api import artifacts, dashboard, demo, devices, meta, models, monitoring, predict, retraining, rollouts

    for mod in (meta, models, artifacts, devices, rollouts, predict, demo, dashboard, monitoring, retraining):
        app.register_blueprint(mod.bp)

    @app.errorhandler(FleetError)
    def fleet_error(exc: FleetError) -> Any:
        return jsonify({"error": str(exc)}), exc.status

    @app.errorhandler(EdgefleetError)
    def other_error(exc: EdgefleetError) -> Any:
        return jsonify({"error": str(exc)}), 400

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        return jsonify({"error": f"{exc.name}: {exc.description}"}), exc.code or 500

    return app
