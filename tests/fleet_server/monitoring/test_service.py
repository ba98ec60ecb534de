"""run_monitor on a real fleet database (SQLite and PostgreSQL): alerts fire after ``fire_after``
drifted windows, are not re-fired while firing, and clear after ``clear_after`` clean ones.

Telemetry is what devices send: the real Scorer, the device's own Sketch, the server's ingest
(``DeviceSim`` in conftest), with timestamps spread over daily windows. The monitor runs once
per closed window, as the server's Monitor thread would.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from edgefleet_cli.samples.telco_churn import make_telco_churn
from fleet_server.core import Fleet, ServerConfig
from fleet_server.db import ModelVersion
from fleet_server.monitoring import policy as policy_mod
from fleet_server.monitoring.service import run_monitor
from fleet_server.monitoring.tables import Alert
from tests.fleet_server.monitoring.conftest import DAY, T0, DeviceSim, add_device

PER_DEVICE = 400


def register_manifest(fleet: Fleet, manifest: dict[str, Any]) -> None:
    """The registry row run_monitor reads (the archive itself plays no part in monitoring)."""
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
    with fleet.session() as s:
        s.add(ModelVersion(name=manifest["name"], version=int(manifest["version"]), sha256=digest, size=1, key_id="0" * 16,
                           formats=["onnx"], manifest=manifest, provenance={}))


def feed(sims: list[DeviceSim], w: int, shifted: bool) -> None:
    for i, sim in enumerate(sims):
        frame = make_telco_churn(PER_DEVICE, seed=300 + 10 * w + i, price_shift=0.3 if shifted else 0.0)
        sim.run_window(frame, T0 + w * DAY, T0 + (w + 1) * DAY, prefix=f"w{w}")


def test_alert_fires_after_k_drifted_windows_and_clears_with_hysteresis(tmp_path: Path, scorer: Any, db_url: str | None) -> None:
    fleet = Fleet(ServerConfig(data_dir=tmp_path / "fleet", db_url=db_url, embedded_broker=False))
    try:
        register_manifest(fleet, scorer.manifest)
        with fleet.session() as s:
            policy_mod.save(s, "churn", policy_mod.validate({"fire_after": 2, "clear_after": 2, "lookback_windows": 10,
                                                             "window_seconds": DAY}))
        sims = []
        for i in range(2):
            add_device(fleet, f"d{i}", "stores")
            sims.append(DeviceSim(fleet, scorer, f"d{i}", sample_rate=0.5, seed=i))
        plan = [False, False, True, True, True, False, False]  # windows 2-4: a 30% price rise
        log: list[list[tuple[str, str, str]]] = []
        for w, shifted in enumerate(plan):
            feed(sims, w, shifted)
            events = run_monitor(fleet, now=T0 + (w + 1) * DAY + 1.0)
            assert run_monitor(fleet, now=T0 + (w + 1) * DAY + 1.0) == [], "a second pass on the same data emits nothing"
            log.append([(e["event"], e["alert"]["cohort"], e["alert"]["subject"]) for e in events if e["alert"]["kind"] == "drift"])
        price = [(w, ev) for w, evs in enumerate(log) for ev in evs if ev[2] == "MonthlyCharges" and ev[1] == "all"]
        assert price == [(3, ("fired", "all", "MonthlyCharges")), (6, ("cleared", "all", "MonthlyCharges"))], log
        assert log[0] == log[1] == log[2] == [], "no alert before two drifted windows"
        assert ("fired", "group=stores", "MonthlyCharges") in log[3]
        assert all(ev[0] == "cleared" for ev in log[6]) and log[4] == log[5] == []
        with fleet.session() as s:
            rows = {(a.cohort, a.subject): a for a in s.query(Alert).filter(Alert.kind == "drift")}
        a = rows[("all", "MonthlyCharges")]
        assert a.state == "cleared" and a.cleared_at is not None and a.version == 1
        assert a.details["fired_in_window"] == T0 + 3 * DAY and a.details["psi_excess"] > 0.1
        assert not any(r.state == "firing" for r in rows.values()), "every drift alert cleared once prices went back"
    finally:
        fleet.engine.dispose()
