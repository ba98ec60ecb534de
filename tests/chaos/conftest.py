"""Chaos-suite fixtures: signed bundles (shared with the device tests) and a real PostgreSQL."""

from __future__ import annotations

from tests.fleet_server.conftest import fresh_pg  # noqa: F401 - the session PostgreSQL, emptied per test
from tests.runtimes.conftest import lr_result, make_bundle  # noqa: F401 - real signed bundles at any version
from tests.support.postgres import postgres_url  # noqa: F401 - session-scoped real PostgreSQL
