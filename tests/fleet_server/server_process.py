"""``python -m tests.fleet_server.server_process CONFIG.json``: ``edgefleet server`` as its own OS
process (so a test can SIGKILL it), with the data dir, database, broker and fixed loopback ports
taken from the config; a restarted server comes back where the devices' credentials point.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> int:
    from fleet_server.core import ServerConfig
    from fleet_server.serve import serve_forever

    c = json.loads(Path(sys.argv[1]).read_text())
    cfg = ServerConfig(
        data_dir=Path(c["data_dir"]), db_url=c.get("db_url"), mqtt_url=c.get("mqtt_url"),
        embedded_broker=c.get("mqtt_url") is None, embedded_mqtt_port=c.get("embedded_mqtt_port") or 1883,
        host="127.0.0.1", port=c["port"], public_url=f"http://127.0.0.1:{c['port']}",
        reconcile_seconds=c.get("reconcile_seconds", 1.0), trust_keys=[Path(p) for p in c["trust_keys"]],
        mqtt_admin=tuple(c["mqtt_admin"]) if c.get("mqtt_admin") else None,  # type: ignore[arg-type]
    )
    return serve_forever(cfg)


if __name__ == "__main__":
    sys.exit(main())
