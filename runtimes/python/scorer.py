"""Offline scoring of a verified bundle.

    scorer = Scorer.from_bundle("churn-v3.tar", "keys/public.pem")
    scorer.score({"Contract": "Month-to-month", "tenure": 3, ...})
    # Prediction(probability=0.71, label=1, version=3)

``from_bundle`` verifies the signature, then every artifact's size and sha256, before anything
is parsed by a runtime; then picks a backend (onnxruntime, ai-edge-litert, pypmml) from what
the manifest offers and what is installed. Every record is validated against the manifest's
input schema (``edgefleet.encoding``); a bad one raises ``ScoringInputError`` naming the field
and the reason. A probability is never returned for input the model was not built for.
"""

from __future__ import annotations

import math
import os
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edgefleet import keys
from edgefleet.bundle_format import Bundle, open_bundle, verify
from edgefleet.encoding import RecordEncoder, encode_records
from edgefleet.errors import BundleError, InputError
from edgefleet.manifest import VerifiedManifest
from runtimes.python.backends import load_backend, one_line
from runtimes.python.errors import ScoringInputError

PublicKeys = Ed25519PublicKey | str | os.PathLike[str] | Sequence[Ed25519PublicKey]


def trusted_key_for(bundle: Bundle, trusted: PublicKeys) -> Ed25519PublicKey:
    """The trusted key the manifest names (by key id), else the first one: verify says why."""
    if isinstance(trusted, (str, os.PathLike)):
        return keys.load_public_key(trusted)
    if isinstance(trusted, Ed25519PublicKey):
        return trusted
    claimed = None
    try:
        claimed = bundle.manifest.get("key_id")
    except BundleError:  # an unparsable manifest fails verification below
        pass
    for k in trusted:
        if keys.key_id(k) == claimed:
            return k
    return trusted[0]


class Prediction(NamedTuple):
    """One scored record. A NamedTuple: immutable, and cheap enough for the per-row hot path."""

    probability: float  # positive-class probability (multi-class: the top class's)
    label: Any
    version: int
    probabilities: tuple[float, ...] = ()


class Scorer:
    def __init__(self, manifest: VerifiedManifest, files: Mapping[str, bytes], backend: str | None = None) -> None:
        if not isinstance(manifest, VerifiedManifest):
            raise TypeError(f"Scorer needs a VerifiedManifest (from edgefleet.bundle_format.verify), not {type(manifest).__name__}: "
                            "an unverified manifest is never scored")
        self.manifest = manifest
        self.name: str = manifest["name"]
        self.version: int = int(manifest["version"])
        self.fields = manifest["input_schema"]["fields"]
        self.classes = list(manifest["output"]["classes"])
        self.threshold = float(manifest["output"]["threshold"])
        self.binary = len(self.classes) == 2
        self.backend = load_backend(manifest, files, backend)
        self._encoder = RecordEncoder(self.fields)
        self._pos: Any = self.classes[1] if self.binary else None
        self._neg: Any = self.classes[0] if self.binary else None

    @classmethod
    def from_bundle(cls, path: str | os.PathLike[str], pubkey: PublicKeys, backend: str | None = None) -> "Scorer":
        bundle = open_bundle(path)
        manifest = verify(bundle, trusted_key_for(bundle, pubkey), allow_partial=True)
        return cls(manifest, bundle.files, backend)

    def _predict(self, features: np.ndarray, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """The backend's probabilities; a runtime failure on a verified bundle is a bundle defect, named in one line."""
        try:
            proba = self.backend.predict(features, records)
        except Exception as exc:  # noqa: BLE001 - onnxruntime, LiteRT and pypmml each raise their own types
            raise BundleError(f"bundle {self.name} v{self.version}: its {self.backend_name} artifact failed to score: {one_line(exc)}") from exc
        if getattr(proba, "ndim", 0) != 2 or proba.shape[0] != len(records) or proba.shape[1] != len(self.classes):
            raise BundleError(
                f"bundle {self.name} v{self.version}: its {self.backend_name} artifact returned shape {getattr(proba, 'shape', None)}, "
                f"expected ({len(records)}, {len(self.classes)}) for its {len(self.classes)} classes"
            )
        checked: np.ndarray = proba
        return checked

    @property
    def backend_name(self) -> str:
        return str(self.backend.name)

    def _prediction(self, p: list[float]) -> Prediction:
        # float32 tree ensembles can sum to 1.0000001 (or -0.0): a reported probability is always in [0, 1]
        p = [0.0 if v <= 0.0 else 1.0 if v > 1.0 else v for v in p]
        if self.binary:
            pos = p[1]
            return Prediction(pos, self._pos if pos > self.threshold else self._neg, self.version, (p[0], pos))
        k = max(range(len(p)), key=p.__getitem__)
        return Prediction(p[k], self.classes[k], self.version, tuple(p))

    def score(self, record: Mapping[str, Any]) -> Prediction:
        try:
            features = self._encoder.encode_one(record)
        except InputError as exc:
            raise ScoringInputError(exc.field, exc.reason) from None
        p = self._predict(features, (record,))[0].tolist()
        if not math.isfinite(sum(p)):
            raise ScoringInputError("<record>", f"model {self.name} v{self.version} returned a non-finite probability")
        return self._prediction(p)

    def score_detailed(self, record: Mapping[str, Any]) -> tuple[Prediction, np.ndarray]:
        """``score`` plus the encoded feature row (for sketches), encoding the record once."""
        try:
            features = self._encoder.encode_one(record)
        except InputError as exc:
            raise ScoringInputError(exc.field, exc.reason) from None
        p = self._predict(features, (record,))[0].tolist()
        if not math.isfinite(sum(p)):
            raise ScoringInputError("<record>", f"model {self.name} v{self.version} returned a non-finite probability")
        return self._prediction(p), features

    def score_many(self, records: Iterable[Mapping[str, Any]]) -> list[Prediction]:
        rows = list(records)
        if not rows:
            return []
        return self.predictions(self.probabilities(self.encode_many(rows), rows))

    # score_many in three steps, for callers that batch several requests into one backend call
    # (fleet_server.batching): encode each request alone (its bad record raises here, naming the
    # field), run the backend once over the concatenated rows, then turn each request's slice of
    # the probabilities into Predictions. The result equals score_many on each request alone.

    def encode_many(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """The (len(rows), F) feature matrix; ScoringInputError naming the field of the first bad record."""
        fast = self._encoder.fast
        encoded: list[np.ndarray | None] = [fast(r) if type(r) is dict else None for r in rows]
        try:
            # The generated per-record encoder is ~2x faster than the general column path;
            # any record it does not take sends the whole batch through the path that names errors.
            ready = [e for e in encoded if e is not None]
            features: np.ndarray = np.concatenate(ready) if len(ready) == len(encoded) else encode_records(self.fields, rows)
        except InputError as exc:
            raise ScoringInputError(exc.field, exc.reason) from None
        return features

    def probabilities(self, features: np.ndarray, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """The backend's (len(rows), classes) probabilities as float64 (BundleError if the artifact fails)."""
        return np.asarray(self._predict(features, rows), dtype=np.float64)

    def predictions(self, proba: np.ndarray) -> list[Prediction]:
        """One Prediction per row; ScoringInputError if the model returned a non-finite probability."""
        if not np.all(np.isfinite(proba)):
            bad = int(np.argmax(~np.isfinite(proba).all(axis=1)))
            raise ScoringInputError("<record>", f"row {bad}: model {self.name} v{self.version} returned a non-finite probability")
        return [self._prediction(p) for p in proba.tolist()]

    def check_canaries(self) -> list[str]:
        """Replay the manifest's canary rows; return one message per failing row (empty = healthy)."""
        canary = self.manifest.get("canary", {})
        tol = float(canary.get("tolerance", 1e-5))
        quantized = getattr(self.backend, "quantization", None)
        if quantized:  # gated at its own tolerance by the compiler; a label may flip only that close to the threshold
            tol = max(tol, float(quantized["tolerance"]))
        failures = []
        rows = canary.get("rows", [])
        if not rows:
            return ["the bundle has no canary rows to check"]
        for i, row in enumerate(rows):
            try:
                got = self.score(row["input"])
            except Exception as exc:  # noqa: BLE001 - any failure of a canary is a health failure
                failures.append(f"canary {i}: {type(exc).__name__}: {exc}")
                continue
            want = row["probabilities"]
            diff = max(abs(a - b) for a, b in zip(got.probabilities, want))
            top = sorted(want)[-2:]
            near = quantized is not None and (abs(want[1] - self.threshold) if self.binary else top[1] - top[0]) <= tol
            if diff > tol or (got.label != row["label"] and not near):
                failures.append(f"canary {i}: probability off by {diff:.3g} (tolerance {tol:g}) or label {got.label!r} != {row['label']!r}")
        return failures
