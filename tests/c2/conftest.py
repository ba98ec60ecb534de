"""C2 fixtures: a real fleet server (waitress + SQLite) with a signed model and MiNiFi-kind agents."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fleet_server.conftest import Api, db_url, fresh_pg, make_server, wait_for  # noqa: F401 - shared fixtures
from tests.runtimes.conftest import lr_result, make_bundle  # noqa: F401 - shared fixtures
from tests.support.postgres import postgres_url  # noqa: F401 - session-scoped real PostgreSQL


def enroll_agent(api: Api, device_id: str, group: str = "minifi") -> dict[str, Any]:
    code, tok, _ = api("POST", "/api/v1/enrollment-tokens", {"group": group})
    assert code == 201, tok
    code, cred, _ = api("POST", "/api/v1/devices/enroll", {"token": tok["token"], "device_id": device_id, "kind": "minifi"}, token=None)
    assert code == 201, cred
    return cred


@pytest.fixture()
def c2_server(make_server: Any) -> Any:  # noqa: F811
    return make_server(reconcile_seconds=0.1)


@pytest.fixture()
def c2_server_any_db(make_server: Any, db_url: str | None) -> Any:  # noqa: F811
    """The same server on SQLite and on a real PostgreSQL (tests.support.postgres)."""
    return make_server(reconcile_seconds=0.1, db_url=db_url)
