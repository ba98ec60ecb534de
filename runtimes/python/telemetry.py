"""Device-side telemetry: sampled predictions, windowed sketches, delayed outcomes.

Three message kinds go into the outbox (see docs/protocol.md for the payloads):

* ``prediction``: time, model version, score, label, optional entity id, and the raw features
  unless ``include_features`` is off (the privacy switch). Sampled at ``sample_rate``.
* ``sketch``: per window and model version, counts of every input field and of the score in
  the manifest's reference bins. Every scored record counts, sampled or not, so monitoring can
  compute PSI and friends without raw data.
* ``outcome``: ``record_outcome(entity_id, label, observed_at)``, for churn labels that arrive
  weeks later and are joined to predictions by entity id on the server.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import random
import threading
import time
from typing import Any, Mapping

import numpy as np

from edgefleet.protocol import MAX_FEATURE_CHARS, MAX_FEATURES, bin_index
from runtimes.python.outbox import Outbox
from runtimes.python.scorer import Prediction


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def bound_features(record: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The record as kept in telemetry, and the names of the fields that were cut.

    A string longer than ``MAX_FEATURE_CHARS`` keeps its first ``MAX_FEATURE_CHARS``
    characters; a value that is not a JSON scalar keeps the same bound on its JSON text; NaN
    becomes null; past ``MAX_FEATURES`` fields the rest are left out (listed as ``"..."``).
    The score was computed from the full record: only what is sent is bounded.
    """
    out: dict[str, Any] = {}
    cut: list[str] = []
    for i, (k, v) in enumerate(record.items()):
        if i >= MAX_FEATURES:
            cut.append("...")
            break
        name = str(k)[:MAX_FEATURE_CHARS]
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        elif not (v is None or isinstance(v, (bool, int, float, str))):
            try:
                v = json.dumps(v, default=str)
            except (TypeError, ValueError, RecursionError):
                v = repr(v)
        elif isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 2 ** 53:
            v = str(v)
        if isinstance(v, str) and len(v) > MAX_FEATURE_CHARS:
            v = _utf8(v[:MAX_FEATURE_CHARS])
            cut.append(name)
        elif name != k or (isinstance(v, str) and _utf8(v) != v) or _utf8(name) != name:
            v = _utf8(v) if isinstance(v, str) else v
            cut.append(name)
        name = _utf8(name)
        out[name] = v
    return out, cut


def _utf8(text: str) -> str:
    """``text`` with lone surrogates (valid in JSON, not in UTF-8 or PostgreSQL) replaced by '?'."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


class Sketch:
    """Counts per field into the manifest's reference bins (the one rule: ``edgefleet.protocol.bin_index``)."""

    def __init__(self, manifest: Mapping[str, Any]) -> None:
        self.version = int(manifest["version"])
        self.model = manifest["name"]
        ref = manifest["reference"]
        self.fields = manifest["input_schema"]["fields"]
        self.edges: list[list[float] | None] = []
        self.counts: list[list[int]] = []
        self.missing = [0] * len(self.fields)
        self.unseen = [0] * len(self.fields)
        for f in self.fields:
            stats = ref["fields"][f["name"]]
            if f["type"] == "categorical":
                self.edges.append(None)
                self.counts.append([0] * len(f["categories"]))
            else:
                self.edges.append(list(stats["edges"]))
                self.counts.append([0] * (len(stats["edges"]) + 1))
        self.score_edges = list(ref["score"]["edges"])
        self.score_counts = [0] * (len(self.score_edges) + 1)
        self.n = 0

    def add(self, record: Mapping[str, Any], features: np.ndarray, score: float) -> None:
        row = features[0] if features.ndim == 2 else features
        for j, edges in enumerate(self.edges):
            v = float(row[j])
            raw = record.get(self.fields[j]["name"])
            if edges is None:
                if raw is None or (isinstance(raw, float) and math.isnan(raw)):
                    self.missing[j] += 1
                elif v < 0:
                    self.unseen[j] += 1
                else:
                    self.counts[j][int(v)] += 1
            elif math.isnan(v):
                self.missing[j] += 1
            else:
                self.counts[j][bin_index(edges, v)] += 1
        self.score_counts[bin_index(self.score_edges, score)] += 1
        self.n += 1

    def to_body(self, start: float, end: float, device_id: str) -> dict[str, Any]:
        fields = {}
        for j, f in enumerate(self.fields):
            entry: dict[str, Any] = {"counts": self.counts[j], "missing": self.missing[j]}
            if f["type"] == "categorical":
                entry["unseen"] = self.unseen[j]
            fields[f["name"]] = entry
        return {
            "device_id": device_id, "model": self.model, "model_version": self.version,
            "window_start": _iso(start), "window_end": _iso(end), "n": self.n,
            "fields": fields, "score": {"counts": self.score_counts},
        }


class Telemetry:
    def __init__(
        self, outbox: Outbox, device_id: str, *, sample_rate: float = 1.0, include_features: bool = True,
        window_seconds: float = 3600.0, rng: random.Random | None = None,
    ) -> None:
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be within [0, 1], got {sample_rate}")
        self.outbox = outbox
        self.device_id = device_id
        self.sample_rate = sample_rate
        self.include_features = include_features
        self.window_seconds = window_seconds
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._sketch: Sketch | None = None
        self._window_start = time.time()

    def on_prediction(self, manifest: Mapping[str, Any], record: Mapping[str, Any], features: np.ndarray, pred: Prediction, entity_id: str | None = None) -> None:
        now = time.time()
        with self._lock:
            if self._sketch is not None and (self._sketch.version != pred.version or now - self._window_start >= self.window_seconds):
                self._flush_locked(now)
            if self._sketch is None:
                self._sketch = Sketch(manifest)
                self._window_start = now
            self._sketch.add(record, features, pred.probability)
        if self.sample_rate >= 1.0 or self._rng.random() < self.sample_rate:
            body: dict[str, Any] = {
                "device_id": self.device_id, "ts": _iso(now), "model": manifest["name"], "model_version": pred.version,
                "score": pred.probability, "label": pred.label, "sample_rate": self.sample_rate,
            }
            if entity_id is not None:
                body["entity_id"] = _utf8(str(entity_id)[:MAX_FEATURE_CHARS])
            if self.include_features:
                kept, cut = bound_features(record)
                body["features"] = kept
                if cut:
                    body["truncated"] = cut
            self.outbox.put("prediction", body)

    def record_outcome(self, entity_id: str, label: Any, observed_at: str | None = None) -> str:
        return self.outbox.put("outcome", {
            "device_id": self.device_id, "entity_id": str(entity_id), "label": label,
            "observed_at": observed_at or _iso(time.time()),
        })

    def flush_window(self) -> str | None:
        with self._lock:
            return self._flush_locked(time.time())

    def _flush_locked(self, now: float) -> str | None:
        sketch, self._sketch = self._sketch, None
        if sketch is None or sketch.n == 0:
            return None
        return self.outbox.put("sketch", sketch.to_body(self._window_start, now, self.device_id))
