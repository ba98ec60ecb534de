"""Drift and performance from stored telemetry: real bundle, real scorer, real sketches, real
ingest into a real SQLite fleet database.

Fleet of four devices: d0, d1 in group north; d2, d3 in group south; d3 also tagged pilot.
Five daily windows of 600 scored records per device; 60% of predictions are sampled with their
features. Three runs: a no-drift control, a 15% price rise for one-year-contract customers only
(a 21% minority), and a 15% price rise on the south devices (which also raises their churn:
concept drift).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from edgefleet_cli.samples.telco_churn import make_telco_churn
from fleet_server.monitoring import aggregate
from fleet_server.monitoring.aggregate import MonitorConfig
from tests.fleet_server.monitoring.conftest import DAY, T0, DeviceSim, add_device, make_fleet

DEVICES = {"d0": ("north", []), "d1": ("north", []), "d2": ("south", []), "d3": ("south", ["pilot"])}
WINDOWS = 5
PER_DEVICE = 600
CONFIG = MonitorConfig(window_seconds=DAY, segment_fields=("Contract", "InternetService"))


def run_fleet(path: Path, scorer: Any, data: Callable[[int, int, str], pd.DataFrame], *, outcomes: float = 0.0) -> dict[str, Any]:
    fleet = make_fleet(path)
    sims = {}
    for i, (dev, (group, tags)) in enumerate(DEVICES.items()):
        add_device(fleet, dev, group, tags)
        sims[dev] = DeviceSim(fleet, scorer, dev, sample_rate=0.6, seed=i)
    for w in range(WINDOWS):
        for i, dev in enumerate(DEVICES):
            sims[dev].run_window(data(w, i, dev), T0 + w * DAY, T0 + (w + 1) * DAY, prefix=f"w{w}")
    rng = random.Random(7)
    labeled: set[str] = set()
    if outcomes:
        for sim in sims.values():
            msgs = []
            for row in sim.scored:
                if rng.random() < outcomes:  # delayed labels, and not for everyone
                    msgs.append(sim.outcome_message(row["entity_id"], row["label"], row["created"] + 20 * DAY))
                    labeled.add(row["entity_id"])
            sim.send(msgs)
    return {"fleet": fleet, "sims": sims, "labeled": labeled}


def _seed(w: int, i: int) -> int:
    return 1000 + 10 * w + i


def plain(w: int, i: int, dev: str) -> pd.DataFrame:
    return make_telco_churn(PER_DEVICE, seed=_seed(w, i))


def one_year_price_rise(w: int, i: int, dev: str) -> pd.DataFrame:
    base = plain(w, i, dev)
    if w < 2:
        return base
    risen = make_telco_churn(PER_DEVICE, seed=_seed(w, i) + 500, price_shift=0.15)
    mixed = pd.concat([base[base["Contract"] != "One year"], risen[risen["Contract"] == "One year"]])
    return mixed.sample(frac=1.0, random_state=w * 10 + i).reset_index(drop=True)


def south_price_rise(w: int, i: int, dev: str) -> pd.DataFrame:
    if w >= 2 and DEVICES[dev][0] == "south":
        return make_telco_churn(PER_DEVICE, seed=_seed(w, i), price_shift=0.15)
    return plain(w, i, dev)


@pytest.fixture(scope="module")
def control(tmp_path_factory: pytest.TempPathFactory, scorer: Any) -> dict[str, Any]:
    return run_fleet(tmp_path_factory.mktemp("control"), scorer, plain)


@pytest.fixture(scope="module")
def segment_run(tmp_path_factory: pytest.TempPathFactory, scorer: Any) -> dict[str, Any]:
    return run_fleet(tmp_path_factory.mktemp("segment"), scorer, one_year_price_rise)


@pytest.fixture(scope="module")
def south_run(tmp_path_factory: pytest.TempPathFactory, scorer: Any) -> dict[str, Any]:
    return run_fleet(tmp_path_factory.mktemp("south"), scorer, south_price_rise, outcomes=0.7)


def report(run: dict[str, Any], manifest: dict[str, Any], fn: Callable[..., dict[str, Any]] = aggregate.drift_report) -> dict[str, Any]:
    with run["fleet"].session() as s:
        out = fn(s, manifest, CONFIG)
    json.dumps(out, allow_nan=False)  # plain JSON, no NaN
    return out


def cells(rep: dict[str, Any], cohort: str) -> list[dict[str, Any]]:
    return [e for e in rep["windows"] if e["cohort"] == cohort]


def test_sketch_histograms_equal_the_raw_features_binned_on_the_server(tmp_path: Path, scorer: Any) -> None:
    """Device sketches (encoded values, Sketch) and server-side binning of raw features
    (RecordBinner) agree bin for bin; a sketch in other bins is refused, not mixed in."""
    fleet = make_fleet(tmp_path / "f")
    sim = DeviceSim(fleet, scorer, "solo", sample_rate=1.0)
    frame = make_telco_churn(600, seed=5, missing_rate=0.05)
    frame.loc[:20, "PaymentMethod"] = "Crypto"  # unseen: the model ignores unknown categories
    sim.run_window(frame, T0, T0 + DAY, prefix="x")
    bad = {"device_id": "solo", "model": "churn", "model_version": 1, "n": 5, "fields": {}, "score": {"counts": [5]}}
    sim.send([{"id": "bad-sketch", "kind": "sketch", "created": T0 + 10, "body": bad}])
    cfg = MonitorConfig(window_seconds=DAY, segment_fields=("Contract",), device_cohorts=False)
    with fleet.session() as s:
        agg = aggregate.histograms(s, scorer.manifest, cfg)
    assert agg["rejected_sketches"] == 1
    from_sketch, from_features = agg["cells"][(T0, "all")], agg["segment_all"][T0]
    assert from_sketch == from_features and from_sketch["n"] == 600
    mc = frame["MonthlyCharges"].to_numpy(dtype=float)
    edges = scorer.manifest["reference"]["fields"]["MonthlyCharges"]["edges"]
    want = np.bincount(np.searchsorted(edges, mc[~np.isnan(mc)], side="right"), minlength=len(edges) + 1)
    assert from_sketch["fields"]["MonthlyCharges"]["counts"] == want.tolist()
    assert from_sketch["fields"]["MonthlyCharges"]["missing"] == int(np.isnan(mc).sum()) > 0
    assert from_sketch["fields"]["PaymentMethod"]["unseen"] == 21
    assert sum(agg["cells"][(T0, f"Contract={c}")]["n"] for c in ("Month-to-month", "One year", "Two year")) == 600


def test_control_run_has_no_drift_verdict_and_no_alert(control: dict[str, Any], scorer: Any) -> None:
    rep = report(control, scorer.manifest)
    cohorts = {e["cohort"] for e in rep["windows"]}
    assert {"all", "group=north", "group=south", "tag=pilot", "Contract=One year", "InternetService=Fiber optic"} <= cohorts
    assert all(len(cells(rep, c)) == WINDOWS for c in cohorts)
    for e in rep["windows"]:
        assert e["verdict"] in (None, "no_drift"), (e["cohort"], e["window_start"], e[e["primary"]]["drifting"])
        for key in ("vs_reference", "vs_baseline", "vs_rest"):
            if e[key] is None or (e["kind"] == "segment" and key == "vs_rest"):
                continue  # a segment differs from the other segments by construction: skew, not drift
            assert e[key]["drifting"] == [], (e["cohort"], key, e[key]["drifting"])
    assert aggregate.alert_events(rep) == []
    first = cells(rep, "all")[0]
    assert first["vs_baseline"] is None and first["n"] == 4 * PER_DEVICE
    assert first["vs_reference"]["fields"]["MonthlyCharges"]["psi"] < 0.05
    seg = cells(rep, "Contract=One year")[1]
    assert seg["vs_reference"] is None and "Contract" not in seg["vs_baseline"]["fields"]


def test_minority_segment_drift_shows_while_global_psi_stays_below_threshold(segment_run: dict[str, Any], scorer: Any) -> None:
    rep = report(segment_run, scorer.manifest)
    threshold = rep["policy"]["psi_threshold"]
    for e in cells(rep, "all")[2:]:
        vs_ref = e["vs_reference"]
        assert e["verdict"] == "no_drift" and vs_ref["drifting"] == []
        assert vs_ref["fields"]["MonthlyCharges"]["psi"] < threshold
        assert max(f["psi"] for f in vs_ref["fields"].values()) < threshold and vs_ref["score"]["psi"] < threshold
    minority = cells(rep, "Contract=One year")
    assert [e["verdict"] for e in minority] == [None, "no_drift", "drift", "drift", "drift"]
    for e in minority[2:]:
        assert "MonthlyCharges" in e["vs_baseline"]["drifting"]
        assert e["vs_baseline"]["fields"]["MonthlyCharges"]["psi_excess"] > threshold
    for other in ("Contract=Month-to-month", "Contract=Two year", "group=north", "group=south"):
        assert "drift" not in [e["verdict"] for e in cells(rep, other)], other
    events = aggregate.alert_events(rep, fire_after=3)
    assert [(ev["event"], ev["cohort"], ev["window_start"]) for ev in events] == [("fired", "Contract=One year", T0 + 4 * DAY)]
    assert "MonthlyCharges" in events[0]["drifting"]


def test_device_group_drift_against_reference_and_the_rest_of_the_fleet(south_run: dict[str, Any], scorer: Any) -> None:
    rep = report(south_run, scorer.manifest)
    south, north, pilot = cells(rep, "group=south"), cells(rep, "group=north"), cells(rep, "tag=pilot")
    assert [e["verdict"] for e in south] == ["no_drift", "no_drift", "drift", "drift", "drift"]
    assert all(e["verdict"] == "no_drift" for e in north)
    assert [e["verdict"] for e in pilot][2:] == ["drift"] * 3
    for e in south[2:]:
        assert "MonthlyCharges" in e["vs_reference"]["drifting"]
        assert "MonthlyCharges" in e["vs_rest"]["drifting"]  # skew against the north devices
        assert e["vs_reference"]["fields"]["MonthlyCharges"]["ks"]["pvalue"] < 1e-6
    assert south[0]["vs_rest"]["drifting"] == []
    events = {(ev["event"], ev["cohort"]) for ev in aggregate.alert_events(rep, fire_after=3)}
    assert ("fired", "group=south") in events and ("fired", "group=north") not in events


def test_realized_metrics_from_delayed_outcomes_next_to_cbpe_estimates(south_run: dict[str, Any], scorer: Any) -> None:
    rep = report(south_run, scorer.manifest, aggregate.performance_report)
    assert rep["assumptions"].startswith("estimated AUROC/AP") and rep["reference"]["auroc"] > 0.75
    assert rep["unmatched_outcomes"] == 0 and rep["unknown_labels"] == 0
    scored = [r for sim in south_run["sims"].values() for r in sim.scored]
    for w in range(WINDOWS):
        lo, hi = T0 + w * DAY, T0 + (w + 1) * DAY
        rows = [r for r in scored if lo <= r["created"] < hi and r["entity_id"] in south_run["labeled"]]
        y, s = [r["label"] for r in rows], [r["score"] for r in rows]
        (e,) = [x for x in rep["windows"] if x["window_start"] == lo and x["cohort"] == "all"]
        assert e["realized"]["n_labeled"] == len(rows)
        assert e["realized"]["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert e["realized"]["average_precision"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
        assert 0.6 < e["label_coverage"] < 0.8
    windows = {(e["cohort"], int((e["window_start"] - T0) // DAY)): e for e in rep["windows"]}
    for w in (0, 1):  # calibrated, no drift: the label-free estimate is close to what labels show
        e = windows[("all", w)]
        assert abs(e["gap"]["auroc"]) < 0.04 and e["realized"]["calibration"]["calibrated"]
    for w in (2, 3, 4):  # the price rise also raised churn in the south: concept drift
        south, north = windows[("group=south", w)], windows[("group=north", w)]
        assert not south["realized"]["calibration"]["calibrated"]
        assert south["realized"]["positive_rate"] - south["mean_score"] > 0.1, "scores under-predict the new churn"
        assert south["realized"]["average_precision"] - south["estimated"]["average_precision"] > 0.1
        assert north["realized"]["calibration"]["calibrated"]


def test_outcome_join_takes_the_latest_prediction_before_the_outcome(tmp_path: Path, scorer: Any) -> None:
    fleet = make_fleet(tmp_path / "f")
    sim = DeviceSim(fleet, scorer, "d")

    def pred(mid: str, eid: str, t: float, score: float) -> dict[str, Any]:
        body = {"device_id": "d", "model": "churn", "model_version": 1, "score": score, "label": int(score > 0.5), "entity_id": eid}
        return {"id": mid, "kind": "prediction", "created": t, "body": body}

    sim.send([pred("p1", "e1", T0 + 100, 0.2), pred("p2", "e1", T0 + 200, 0.9), pred("p3", "e2", T0 + 100, 0.4),
              pred("p4", "e3", T0 + 100, 0.6), pred("p5", "e4", T0 + 500, 0.7)])
    sim.outcome("e1", 0, T0 + 150)       # before p2: belongs to p1
    sim.outcome("e1", True, T0 + 300)    # after p2: belongs to p2 (True = positive)
    sim.outcome("e2", 1, T0 + 110)
    sim.outcome("e2", 0, T0 + 120)       # a later outcome for the same prediction replaces the earlier
    sim.outcome("e3", "maybe", T0 + 150)  # neither class
    sim.outcome("e4", 1, T0 + 400)       # before its only prediction
    sim.outcome("nobody", 1, T0 + 400)
    with fleet.session() as s:
        joined = aggregate.join_outcomes(s, scorer.manifest)
    by_id = {joined["predictions"][i].id: y for i, y in joined["labels"].items()}
    assert by_id == {"p1": False, "p2": True, "p3": False}
    assert joined["unmatched_outcomes"] == 2 and joined["unknown_labels"] == 1


def test_config_refuses_segment_names_that_collide_with_device_cohorts() -> None:
    with pytest.raises(ValueError, match="group"):
        MonitorConfig(segment_fields=("Contract", "group"))
    with pytest.raises(ValueError):
        MonitorConfig(window_seconds=0)
