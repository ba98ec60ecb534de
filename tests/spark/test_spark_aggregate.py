"""edgefleet monitor aggregate --engine spark equals the server's aggregation on the same telemetry (exactly)."""

from __future__ import annotations

import json
import random
import uuid
from pathlib import Path
from typing import Any

from edgefleet_cli.samples.telco_churn import make_telco_churn
from fleet_server.monitoring import aggregate
from fleet_server.monitoring.aggregate import MonitorConfig
from fleet_server.monitoring.spark_aggregate import aggregate as spark_aggregate
from fleet_server.monitoring.spark_aggregate import export_telemetry
from tests.fleet_server.monitoring.conftest import DAY, T0, DeviceSim, add_device, lr_bundle, make_fleet, scorer  # noqa: F401

DEVICES = {"n1": ("north", ["urban"]), "n2": ("north", []), "s1": ("south", ["urban", "pilot"])}
CONFIG = MonitorConfig(window_seconds=DAY, segment_fields=("Contract", "InternetService"))


def test_spark_aggregation_equals_the_server_on_the_same_export(spark: Any, scorer: Any, tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path / "fleet")
    sims = {}
    for i, (dev, (group, tags)) in enumerate(DEVICES.items()):
        add_device(fleet, dev, group, tags)
        sims[dev] = DeviceSim(fleet, scorer, dev, sample_rate=0.7, seed=i)
    for w in range(3):
        for i, dev in enumerate(DEVICES):
            frame = make_telco_churn(150, seed=500 + 10 * w + i, price_shift=0.25 if (dev == "s1" and w == 2) else 0.0, missing_rate=0.02)
            sims[dev].run_window(frame, T0 + w * DAY, T0 + (w + 1) * DAY, prefix=f"w{w}")
    rng = random.Random(3)
    for sim in sims.values():
        msgs = [sim.outcome_message(r["entity_id"], r["label"], r["created"] + 9 * DAY) for r in sim.scored if rng.random() < 0.6]
        # a second, later outcome for some (it replaces the first), one for nobody, one with a label the model does not have
        msgs += [sim.outcome_message(r["entity_id"], 1 - r["label"], r["created"] + 12 * DAY) for r in sim.scored[:5]]
        msgs += [sim.outcome_message("nobody", 1, T0 + DAY), sim.outcome_message(sim.scored[7]["entity_id"], "maybe", T0 + 30 * DAY)]
        # an outcome observed before its prediction matches nothing
        msgs += [{**sim.outcome_message(sim.scored[-1]["entity_id"], 1, T0 - DAY), "id": uuid.uuid4().hex}]
        sim.send(msgs)
    manifest = scorer.manifest
    with fleet.session() as s:
        cohorts = aggregate.device_cohorts(s)
        want_drift = aggregate.drift_report(s, manifest, CONFIG, cohorts_of_device=cohorts)
        want_perf = aggregate.performance_report(s, manifest, CONFIG, cohorts_of_device=cohorts)
    export = tmp_path / "telemetry-export"
    counts = export_telemetry(fleet, export)
    assert counts["telemetry"] > 1000 and counts["devices"] == 3
    (export / "manifests" / "churn-v1.json").write_text(json.dumps(dict(manifest)))  # the sim registers no bundle upload
    (got,) = spark_aggregate(spark, export, CONFIG)
    assert want_perf["unknown_labels"] == 3 and want_perf["unmatched_outcomes"] == 6  # the edge cases above were exercised
    assert len(want_drift["windows"]) > 20 and any(w["verdict"] == "drift" for w in want_drift["windows"])
    assert got["drift"] == want_drift
    assert got["performance"] == want_perf
