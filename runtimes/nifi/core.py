"""ScoreChurn's core: the part of the NiFi and MiNiFi processors that knows nothing of either.

    core = ScoreChurnCore(ScoreChurnSettings(model_path=".../edgefleet/churn/bundle.tar", trusted_keys=".../edgefleet/keys"))
    core.refresh()                      # on schedule: verify and load, or refuse and say why
    outcome = core.score_content(flowfile_bytes)
    outcome.scored, outcome.invalid     # [(index, record, Prediction)], [(index, record, reason)]

Rules, in the order they apply:

* The model is a signed bundle file (the slim ONNX or PMML bundle a C2 server syncs to
  ``edgefleet/<model>/bundle.tar``). ``refresh`` hashes the file; when the sha256 differs from
  the last one it looked at, it verifies the bundle (signature against the trusted keys, then
  every artifact's size and sha256, ``Scorer.from_bundle``) and only then swaps it in. A bundle
  that fails is refused with its reason and the last good one keeps scoring; the refused hash is
  remembered, so a bad file is not re-verified for every flowfile. A missing file keeps the last
  good model too (the C++ agent deletes an old asset before it renames the new one into place).
* ``trusted_keys`` is a PEM file or a folder of ``*.pem`` (the ``edgefleet/keys`` assets).
* A flowfile holds one JSON object, a JSON array of objects, or JSON Lines. Each record is read
  by the file rule of ``edgefleet score`` (``edgefleet.encoding.FileRule``: extra fields such as
  an id ride along, text numbers are parsed), then checked against the manifest's input schema;
  a bad one goes to ``invalid`` with
  ``record <i>: <field>: <reason>`` and never gets a probability. The valid ones are scored in
  one ``Scorer.score_many`` call, so a flowfile scores exactly as the device runtime does.
* ``threshold`` overrides the manifest's threshold for the label (binary models only).
* With a ``telemetry`` sink (``runtimes.nifi.telemetry.FlowTelemetry``), every scored record
  feeds the device runtime's sketches and sampled predictions, so a MiNiFi fleet is a cohort in
  drift monitoring like any device.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edgefleet import keys
from edgefleet.encoding import FileRule, encode_records
from edgefleet.errors import EdgefleetError, InputError
from runtimes.python.scorer import Prediction, Scorer

log = logging.getLogger(__name__)

OUTPUT_MODES = ("attributes", "json")


class ScoreChurnError(EdgefleetError):
    """A setting the processor cannot run with, or no verified model to score with."""


class TelemetrySink(Protocol):
    def on_prediction(self, manifest: Mapping[str, Any], record: Mapping[str, Any], features: np.ndarray, pred: Prediction,
                      entity_id: str | None = None) -> None: ...


@dataclass(frozen=True)
class ScoreChurnSettings:
    """The processor's properties, already resolved (``@{asset-id:...}`` / expression language done by the host)."""

    model_path: str
    trusted_keys: str
    output_mode: str = "json"          # "json": records with churn_probability/churn_label/model_version; "attributes": content kept
    threshold: float | None = None     # overrides the manifest's probability threshold for the label
    entity_field: str | None = None    # a record field sent with sampled predictions, so delayed outcomes join

    def __post_init__(self) -> None:
        if not self.model_path:
            raise ScoreChurnError("Model Bundle Path: empty; point it at the synced asset (edgefleet/<model>/bundle.tar)")
        if not self.trusted_keys:
            raise ScoreChurnError("Trusted Public Keys: empty; a PEM file or the edgefleet/keys asset folder")
        if self.output_mode not in OUTPUT_MODES:
            raise ScoreChurnError(f"Output Mode: {self.output_mode!r} is not one of {list(OUTPUT_MODES)}")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ScoreChurnError(f"Probability Threshold: {self.threshold} is not within [0, 1]")


@dataclass
class ScoreOutcome:
    scored: list[tuple[int, dict[str, Any], Prediction]] = field(default_factory=list)
    invalid: list[tuple[int, Any, str]] = field(default_factory=list)


def load_trusted_keys(path: str) -> list[Ed25519PublicKey]:
    p = Path(path)
    files = sorted(p.glob("*.pem")) if p.is_dir() else [p]
    found = [keys.load_public_key(f) for f in files if f.exists()]
    if not found:
        raise ScoreChurnError(f"Trusted Public Keys: no public key at {path}")
    return found


def parse_records(content: bytes) -> list[Any]:
    """One JSON object, a JSON array, or JSON Lines; a line that is not JSON is an invalid record, not an exception."""
    text = content.decode("utf-8", errors="replace").strip()
    if not text:
        return []
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
        out: list[Any] = []
        for i, line in enumerate(text.splitlines()):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except ValueError as exc:
                    out.append(_Unparsed(f"line {i + 1} is not JSON: {exc}"))
        return out
    return doc if isinstance(doc, list) else [doc]


@dataclass(frozen=True)
class _Unparsed:
    reason: str


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class ScoreChurnCore:
    def __init__(self, settings: ScoreChurnSettings, telemetry: TelemetrySink | None = None, backend: str | None = None) -> None:
        self.settings = settings
        self.telemetry = telemetry
        self.backend = backend
        self.scorer: Scorer | None = None
        self.loaded_sha256: str | None = None
        self.seen_sha256: str | None = None
        self.last_refusal: str | None = None
        self._rule: FileRule | None = None
        self._lock = threading.Lock()  # MiNiFi C++ runs every Python processor in one interpreter, possibly concurrently

    def refresh(self) -> str | None:
        """Load the bundle if its file changed since the last look; the refusal reason, or None."""
        path = Path(self.settings.model_path)
        with self._lock:
            try:
                sha = _sha256(path)
            except OSError as exc:
                if self.scorer is None:
                    self.last_refusal = f"Model Bundle Path: cannot read {path}: {exc.strerror or exc}"
                    return self.last_refusal
                return None  # the asset is being replaced; keep scoring with the last good model
            if sha == self.seen_sha256:
                return self.last_refusal if sha != self.loaded_sha256 else None
            self.seen_sha256 = sha
            try:
                scorer = Scorer.from_bundle(path, load_trusted_keys(self.settings.trusted_keys), self.backend)
            except (EdgefleetError, OSError) as exc:
                keep = f"; still scoring with {self.scorer.name} v{self.scorer.version}" if self.scorer else ""
                self.last_refusal = f"refused bundle {path.name} (sha256 {sha[:12]}): {exc}{keep}"
                log.error("%s", self.last_refusal)
                return self.last_refusal
            self.scorer, self.loaded_sha256, self.last_refusal = scorer, sha, None
            self._rule = FileRule(scorer.fields)
            log.info("loaded %s v%d (sha256 %s) from %s", scorer.name, scorer.version, sha[:12], path)
            return None

    def score_content(self, content: bytes) -> ScoreOutcome:
        self.refresh()
        scorer, rule = self.scorer, self._rule
        if scorer is None or rule is None:
            raise ScoreChurnError(self.last_refusal or "no verified model loaded")
        out = ScoreOutcome()
        good: list[tuple[int, dict[str, Any]]] = []
        model_rows: list[dict[str, Any]] = []
        for i, rec in enumerate(parse_records(content)):
            if isinstance(rec, _Unparsed):
                out.invalid.append((i, None, f"record {i}: {rec.reason}"))
            elif not isinstance(rec, dict):
                out.invalid.append((i, rec, f"record {i}: expected a JSON object, got {type(rec).__name__}"))
            else:
                try:
                    row = rule(rec)
                    encode_records(scorer.fields, [row])
                except InputError as exc:
                    out.invalid.append((i, rec, f"record {i}: {exc.field}: {exc.reason.removeprefix('row 0: ')}"))
                    continue
                good.append((i, rec))
                model_rows.append(row)
        if not good:
            return out
        preds = scorer.score_many(model_rows)
        threshold = self.settings.threshold
        if threshold is not None and scorer.binary:
            preds = [p._replace(label=scorer.classes[1] if p.probability > threshold else scorer.classes[0]) for p in preds]
        out.scored = [(i, r, p) for (i, r), p in zip(good, preds)]
        if self.telemetry is not None:
            features = encode_records(scorer.fields, model_rows)
            ent = self.settings.entity_field
            for j, ((_, r), p) in enumerate(zip(good, preds)):
                self.telemetry.on_prediction(scorer.manifest, model_rows[j], features[j:j + 1], p,
                                             entity_id=str(r[ent]) if ent and r.get(ent) is not None else None)
        return out

    def render(self, outcome: ScoreOutcome, original: bytes) -> tuple[bytes | None, dict[str, str]]:
        """The success flowfile: content (None = unchanged) and attributes, per the output mode."""
        scorer = self.scorer
        attrs = {"score.count": str(len(outcome.scored)), "score.invalid.count": str(len(outcome.invalid))}
        if scorer is not None:
            attrs.update({"score.model": scorer.name, "score.model.version": str(scorer.version)})
        if self.settings.output_mode == "json":
            rows = [{**r, "churn_probability": p.probability, "churn_label": p.label, "model_version": p.version}
                    for _, r, p in outcome.scored]
            return json.dumps(rows if len(rows) != 1 else rows[0], default=str).encode(), attrs
        if len(outcome.scored) == 1:
            _, _, p = outcome.scored[0]
            attrs.update({"score.probability": repr(p.probability), "score.label": str(p.label)})
        else:
            attrs["score.probabilities"] = json.dumps([p.probability for _, _, p in outcome.scored])
            attrs["score.labels"] = json.dumps([p.label for _, _, p in outcome.scored], default=str)
        return None, attrs

    def render_failure(self, outcome: ScoreOutcome) -> tuple[bytes, dict[str, str]]:
        """The failure flowfile: the invalid records and the field-named reasons."""
        reasons = [why for _, _, why in outcome.invalid]
        content = json.dumps([rec for _, rec, _ in outcome.invalid], default=str).encode()
        return content, {"score.failure.reason": reasons[0] if reasons else "", "score.failure.reasons": json.dumps(reasons),
                         "score.invalid.count": str(len(reasons))}


def settings_from_properties(props: Mapping[str, str | None]) -> ScoreChurnSettings:
    """The shells' property values (by display name) to settings; a bad one names the property."""
    raw = props.get("Probability Threshold")
    threshold = None
    if raw not in (None, ""):
        try:
            threshold = float(str(raw))
        except ValueError:
            raise ScoreChurnError(f"Probability Threshold: {raw!r} is not a number") from None
    return ScoreChurnSettings(model_path=os.path.expanduser(props.get("Model Bundle Path") or ""),
                              trusted_keys=os.path.expanduser(props.get("Trusted Public Keys") or ""),
                              output_mode=props.get("Output Mode") or "json", threshold=threshold,
                              entity_field=props.get("Entity ID Field") or None)
