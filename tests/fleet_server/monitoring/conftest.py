"""Monitoring fixtures: a real compiled LR bundle scored by its real runtime, a real fleet
database (SQLite through ``Fleet``: ``make_engine`` + ``init_db``), and a device simulator
that writes telemetry the way the device agent does.

The simulator uses the device's own ``Sketch`` for sketch bodies and builds prediction and
outcome bodies with the fields ``Telemetry`` sends; it only replaces the wall clock with
simulated timestamps, so windows of a day take milliseconds. Messages go through the server's
real ingest (validation, idempotent insert).
"""

from __future__ import annotations

import datetime as dt
import math
import random
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgefleet_cli.samples.telco_churn import CATEGORICAL, LABEL, NUMERIC, make_telco_churn
from fleet_server.core import Fleet, ServerConfig
from fleet_server.db import Device
from fleet_server.ingest import ingest
from runtimes.python import Scorer
from runtimes.python.telemetry import Sketch

DAY = 86_400.0
T0 = 1_790_000_000.0 - (1_790_000_000.0 % DAY)  # a window boundary in 2026


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def records(frame: Any) -> list[dict[str, Any]]:
    return frame[CATEGORICAL + NUMERIC].to_dict(orient="records")


@pytest.fixture(scope="session")
def lr_bundle() -> Any:
    """A logistic-regression churn model compiled to a signed ONNX bundle (reference on 3,000 rows)."""
    from train_churn import make_pipeline

    from compiler import compile

    df = make_telco_churn(7000, seed=3)
    model = make_pipeline("lr").fit(df[CATEGORICAL + NUMERIC].iloc[:4000], df[LABEL].iloc[:4000])
    return compile(model, df.iloc[4000:].reset_index(drop=True), targets=["onnx"], name="churn", version=1,
                   private_key=Ed25519PrivateKey.generate(), label=LABEL, created_at="2026-11-01T00:00:00Z")


@pytest.fixture(scope="session")
def scorer(lr_bundle: Any) -> Scorer:
    return Scorer(lr_bundle.manifest, lr_bundle.files)


def make_fleet(path: Path) -> Fleet:
    return Fleet(ServerConfig(data_dir=path, embedded_broker=False))


def add_device(fleet: Fleet, device_id: str, group: str, tags: list[str] | None = None) -> None:
    with fleet.session() as s:
        s.add(Device(device_id=device_id, token_hash=uuid.uuid4().hex, group=group, tags=tags or []))


class DeviceSim:
    """One device: scores records with the real Scorer and ingests its telemetry."""

    def __init__(self, fleet: Fleet, scorer: Scorer, device_id: str, *, sample_rate: float = 1.0, seed: int = 0) -> None:
        self.fleet, self.scorer, self.device_id = fleet, scorer, device_id
        self.sample_rate = sample_rate
        self.rng = random.Random(seed)
        self.scored: list[dict[str, Any]] = []  # what was sampled: entity, time, score, true label

    def run_window(self, frame: Any, t0: float, t1: float, prefix: str) -> None:
        manifest = self.scorer.manifest
        sketch = Sketch(manifest)
        msgs = []
        labels = frame[LABEL].tolist()
        step = (t1 - t0) / max(len(frame), 1)
        for i, rec in enumerate(records(frame)):
            ts = t0 + i * step
            pred, feats = self.scorer.score_detailed(rec)
            sketch.add(rec, feats, pred.probability)
            if self.sample_rate >= 1.0 or self.rng.random() < self.sample_rate:
                eid = f"{prefix}-{self.device_id}-{i}"
                body = {
                    "device_id": self.device_id, "ts": iso(ts), "model": manifest["name"], "model_version": pred.version,
                    "score": pred.probability, "label": pred.label, "sample_rate": self.sample_rate, "entity_id": eid,
                    "features": {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in rec.items()},
                }
                msgs.append({"id": uuid.uuid4().hex, "kind": "prediction", "created": ts, "body": body})
                self.scored.append({"entity_id": eid, "created": ts, "score": pred.probability, "label": int(labels[i]), "record": rec})
        msgs.append({"id": uuid.uuid4().hex, "kind": "sketch", "created": t1 - 1e-3, "body": sketch.to_body(t0, t1, self.device_id)})
        self.send(msgs)

    def outcome_message(self, entity_id: str, label: Any, observed_at: float) -> dict[str, Any]:
        """What ``Telemetry.record_outcome`` queues, sent a minute after the label is observed."""
        body = {"device_id": self.device_id, "entity_id": entity_id, "label": label, "observed_at": iso(observed_at)}
        return {"id": uuid.uuid4().hex, "kind": "outcome", "created": observed_at + 60.0, "body": body}

    def outcome(self, entity_id: str, label: Any, observed_at: float) -> None:
        self.send([self.outcome_message(entity_id, label, observed_at)])

    def send(self, msgs: list[dict[str, Any]]) -> None:
        for i in range(0, len(msgs), 5000):
            ingest(self.fleet, self.device_id, {"device_id": self.device_id, "messages": msgs[i:i + 5000]})
