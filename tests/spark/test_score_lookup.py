"""GET /api/v1/scores/{model}/{entity_id} on a real fleet server, reading what batch-score stored (SQLite and PostgreSQL),
behind its own read-only API key kind (scores:read)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from runtimes.spark import BatchConfig, run_batch
from tests.fleet_server.conftest import Api, make_server  # noqa: F401 - the real server fixture
from tests.spark.conftest import table_rows


def _batch(spark: Any, files: dict[str, Any], output: str, run_id: str) -> None:
    run_batch(BatchConfig(bundle=str(files["bundle"]), pubkey=str(files["pubkey"]), input=str(files["parquet"]),
                          entity_column="customerID", output=output, run_id=run_id), stream=io.StringIO(), session=spark)


def _mint(api: Api, name: str = "call-centre") -> str:
    status, body, _ = api("POST", "/api/v1/api-keys", {"kind": "scores:read", "name": name})
    assert status == 201, body
    assert body["key"].startswith(f"efk_{body['key_id']}_")
    return str(body["key"])


def test_lookup_from_the_fleet_db_with_its_key_only(spark: Any, batch_files: dict[str, Any], make_server: Any, tmp_path: Path) -> None:
    server = make_server(data_dir=tmp_path / "fleet")
    admin = Api(server)
    key = _mint(admin)
    caller = Api(server, token=key)
    status, body, _ = caller("GET", "/api/v1/scores/churn/C000-000000")
    assert status == 404 and "no batch scores stored yet" in body["error"]  # before the first nightly run
    url = f"sqlite:///{server.fleet.data_dir / 'fleet.sqlite'}?table=scores"  # the default: the fleet DB, table scores
    _batch(spark, batch_files, url, "night-1")
    entity, p, version, run_id = table_rows(url, "SELECT entity_id, probability, model_version, run_id FROM scores LIMIT 1")[0]
    status, body, _ = caller("GET", f"/api/v1/scores/churn/{entity}")
    assert status == 200, body
    assert (body["probability"], body["model_version"], body["run_id"], body["entity_id"]) == (p, version, "night-1", entity)
    assert body["bundle_sha256"] and body["scored_at"].endswith("Z") and body["age_seconds"] >= 0 and body["source"] == "batch"
    status, body, _ = caller("GET", "/api/v1/scores/churn/no-such-customer")
    assert status == 404 and body["error"].startswith("entity_id: no batch score of model 'churn'")
    assert caller("GET", "/api/v1/scores/other-model/" + entity)[0] == 404
    assert caller("GET", f"/api/v1/scores/churn/{entity}", token=None)[0] == 401
    assert caller("GET", f"/api/v1/scores/churn/{entity}", token="efk_00000000_guess")[0] == 403
    assert admin("GET", f"/api/v1/scores/churn/{entity}")[0] == 200  # the admin may read too; the call centre need not be admin
    # the key reads scores and nothing else
    assert caller("GET", "/api/v1/models")[0] == 403
    assert caller("POST", "/api/v1/api-keys", {"kind": "scores:read", "name": "x"})[0] == 403
    status, listed, _ = admin("GET", "/api/v1/api-keys")
    assert status == 200 and [k["kind"] for k in listed["keys"]] == ["scores:read"] and key not in str(listed)
    kid = listed["keys"][0]["key_id"]
    assert admin("DELETE", f"/api/v1/api-keys/{kid}")[0] == 200
    status, body, _ = caller("GET", f"/api/v1/scores/churn/{entity}")
    assert status == 403 and "not a valid scores:read API key" in body["error"]
    status, body, _ = admin("POST", "/api/v1/api-keys", {"kind": "admin", "name": "x"})
    assert status == 400 and body["error"].startswith("kind:")


def test_lookup_from_postgres_scores_db(spark: Any, batch_files: dict[str, Any], make_server: Any, postgres_url: str,
                                        tmp_path: Path) -> None:
    url = f"{postgres_url}?table=callcentre_scores"
    _batch(spark, batch_files, url, "pg-night")
    server = make_server(data_dir=tmp_path / "fleet", scores_db_url=url)
    caller = Api(server, token=_mint(Api(server)))
    rows = table_rows(url, "SELECT entity_id, probability FROM callcentre_scores ORDER BY entity_id LIMIT 3")
    for entity, p in rows:
        status, body, _ = caller("GET", f"/api/v1/scores/churn/{entity}")
        assert status == 200 and body["probability"] == p and body["run_id"] == "pg-night", body
    status, body, _ = caller("GET", "/api/v1/scores/churn/unknown-42")
    assert status == 404 and "error" in body
