"""Telemetry: sketches in the manifest's bins, sampling, the privacy switch, a bounded outbox."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np

from edgefleet_cli.samples.telco_churn import CATEGORICAL, NUMERIC
from runtimes.python import Scorer
from runtimes.python.outbox import Outbox
from runtimes.python.telemetry import Telemetry


def _records(frame: Any) -> list[dict[str, Any]]:
    return [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
            for r in frame[CATEGORICAL + NUMERIC].to_dict(orient="records")]


def test_sketch_counts_match_reference_bins(tmp_path: Path, compiled: Any, keypair: dict[str, Any], fresh_data: Any) -> None:
    scorer = Scorer.from_bundle(compiled("gb").archive, keypair["public"])
    outbox = Outbox(tmp_path / "o.sqlite")
    tel = Telemetry(outbox, "d1", sample_rate=0.0, window_seconds=1e9)
    records = _records(fresh_data)
    for rec in records:
        pred, feats = scorer.score_detailed(rec)
        tel.on_prediction(scorer.manifest, rec, feats, pred)
    assert outbox.depth() == 0, "sample_rate 0 sends no predictions"
    tel.flush_window()
    (msg,) = outbox.peek()
    body = msg.body
    assert msg.kind == "sketch" and body["n"] == len(records) and body["model_version"] == 1
    ref = scorer.manifest["reference"]["fields"]
    tc = fresh_data["TotalCharges"].to_numpy(dtype=float)
    expected = np.bincount(np.searchsorted(ref["TotalCharges"]["edges"], tc[~np.isnan(tc)], side="right"), minlength=len(ref["TotalCharges"]["edges"]) + 1)
    assert body["fields"]["TotalCharges"]["counts"] == expected.tolist()
    assert body["fields"]["TotalCharges"]["missing"] == int(np.isnan(tc).sum()) > 0
    cats = ref["Contract"]["categories"]
    assert body["fields"]["Contract"]["counts"] == [int((fresh_data["Contract"] == c).sum()) for c in cats]
    assert sum(body["score"]["counts"]) == len(records)


def test_sampling_privacy_and_outcomes(tmp_path: Path, compiled: Any, keypair: dict[str, Any], fresh_data: Any) -> None:
    scorer = Scorer.from_bundle(compiled("lr").archive, keypair["public"])
    outbox = Outbox(tmp_path / "o.sqlite")
    tel = Telemetry(outbox, "d1", sample_rate=0.25, include_features=False, rng=random.Random(0))
    records = _records(fresh_data)
    for i, rec in enumerate(records):
        pred, feats = scorer.score_detailed(rec)
        tel.on_prediction(scorer.manifest, rec, feats, pred, entity_id=f"c{i}")
    preds = [m for m in outbox.peek(10_000) if m.kind == "prediction"]
    assert 0.18 * len(records) < len(preds) < 0.32 * len(records)
    assert all("features" not in m.body and m.body["sample_rate"] == 0.25 and m.body["entity_id"].startswith("c") for m in preds)
    oid = tel.record_outcome("c7", 1, "2026-12-20T00:00:00Z")
    outcome = next(m for m in outbox.peek(10_000) if m.id == oid)
    assert outcome.body == {"device_id": "d1", "entity_id": "c7", "label": 1, "observed_at": "2026-12-20T00:00:00Z"}


def test_outbox_is_bounded_counts_drops_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    box = Outbox(path, max_messages=100)
    box.put_many("sketch", [{"i": i} for i in range(10)])
    box.put_many("prediction", [{"i": i} for i in range(150)])
    stats = box.stats()
    assert stats["depth"] == 100 and stats["dropped_prediction"] == 60 and "dropped_sketch" not in stats
    assert sum(m.kind == "sketch" for m in box.peek(1000)) == 10, "samples are dropped before sketches"
    ids = [m.id for m in box.peek(30)]
    assert box.ack(ids) == 30 and box.ack(ids) == 0
    box.close()
    again = Outbox(path, max_messages=100)
    assert again.depth() == 70 and again.stats()["dropped_prediction"] == 60
    assert not set(ids) & {m.id for m in again.peek(1000)}
