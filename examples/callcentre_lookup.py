"""The call centre's side of batch scoring: fetch one customer's nightly score from the fleet server.

    python examples/callcentre_lookup.py --scores-db 'sqlite:///demo-out/ops.db?table=churn_scores' [--entity C000-014000]

Starts a fleet server on a free loopback port (its own data dir under --out, no MQTT) that reads
the operational database ``edgefleet batch-score`` wrote (``--scores-db``), mints a read-only
``scores:read`` API key with the admin token (POST /api/v1/api-keys), then calls
GET /api/v1/scores/churn/<entity> with that key alone, prints the answer, and stops the server.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def call(url: str, token: str, method: str = "GET", body: Any = None) -> Any:
    req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scores-db", required=True, help="the operational database batch-score wrote (URL?table=T)")
    ap.add_argument("--model", default="churn")
    ap.add_argument("--entity", help="customer id (default: the first one in a SQLite scores table)")
    ap.add_argument("--out", default="demo-out", help="folder for this server's data dir")
    args = ap.parse_args()

    from fleet_server.core import ServerConfig
    from fleet_server.serve import FleetServer

    entity = args.entity
    if entity is None:
        db, _, query = args.scores_db.partition("?")
        table = query.split("table=", 1)[1].split("&")[0] if "table=" in query else "scores"
        with sqlite3.connect(db[len("sqlite:///"):]) as conn:
            entity = conn.execute(f"SELECT entity_id FROM {table} WHERE model = ? ORDER BY entity_id LIMIT 1", (args.model,)).fetchone()[0]
    server = FleetServer(ServerConfig(data_dir=Path(args.out) / "callcentre-fleet", scores_db_url=args.scores_db,
                                      embedded_broker=False, port=0)).start()
    try:
        admin = server.fleet.secrets.admin_token
        key = call(f"{server.url}/api/v1/api-keys", admin, "POST", {"kind": "scores:read", "name": "call-centre"})["key"]
        got = call(f"{server.url}/api/v1/scores/{args.model}/{entity}", key)  # the read-only key alone
    finally:
        server.stop()
    print(f"call-centre lookup (GET /api/v1/scores/{args.model}/{entity}, scores:read key): "
          f"p={got['probability']:.4f} label={got['label']} v{got['model_version']} run {got['run_id']} scored {got['scored_at']}")
    print(json.dumps(got))
    return 0


if __name__ == "__main__":
    sys.exit(main())
