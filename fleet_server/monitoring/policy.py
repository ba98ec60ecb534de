"""Per-model monitoring policy: thresholds, hysteresis, windows, cohorts and the webhook.

A policy is stored as JSON in ``monitor_policies`` (``PUT /api/v1/models/<name>/policy``);
a model without one uses the defaults below. ``validate`` takes a partial object, checks every
key and returns the complete policy; its errors name the field (``policy.alpha: ...``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping
from urllib.parse import urlsplit

from edgefleet import fairness
from fleet_server.errors import FleetError
from fleet_server.monitoring import stats
from fleet_server.monitoring.aggregate import MonitorConfig
from fleet_server.monitoring.retrain_trigger import RetrainPolicy
from fleet_server.monitoring.retrain_trigger import parse as parse_retrain


@dataclass(frozen=True)
class Policy:
    """One model's monitoring settings; times in seconds."""

    psi_threshold: float = 0.1          # drift: noise-corrected PSI above this is material
    alpha: float = 0.01                 # drift: significance of PSI (split over the fields tested together)
    min_count: int = 200                # drift: rows in a window below which there is no verdict
    fire_after: int = 3                 # consecutive bad windows before an alert fires
    clear_after: int = 3                # consecutive good windows before it clears
    window_seconds: float = 86_400.0
    lookback_windows: int = 30          # complete windows re-evaluated by each monitor run
    segment_fields: tuple[str, ...] = ()  # customer-segment cohorts read from prediction features
    max_auroc_drop: float = 0.05        # performance: reference AUROC minus a window's (or the canary's) AUROC
    max_ap_drop: float = 0.05           # performance: the same for average precision
    min_labeled: int = 100              # performance: labeled rows a window needs for realized metrics
    webhook: str | None = None          # alerts are POSTed here as JSON
    canary_gate: bool = False           # apply the ML canary gate to every rollout of this model
    canary_min_count: int | None = None  # canary rows the gate waits for (None: min_count)
    retrain: RetrainPolicy | None = None  # a fired alert starts this retraining command (monitoring.retrain)
    # fairness per customer segment (monitoring.fairness; definitions in edgefleet.fairness)
    fairness_fields: tuple[str, ...] = ()  # sensitive fields read from sampled prediction features
    fairness_reference: dict[str, str] = field(default_factory=dict)  # field -> reference group (default: the largest)
    fairness_tolerance: float = 0.1     # largest acceptable gap in selection rate, TPR or FPR against the reference
    fairness_min_ratio: float = 0.8     # smallest acceptable demographic-parity ratio
    fairness_min_count: int = 50        # rows per group (positives and negatives for TPR/FPR) below which there is no verdict
    fairness_confidence: float = 0.95   # bootstrap interval level
    fairness_threshold: float | None = None  # score above which a row counts as selected (None: the manifest's threshold)
    fairness_alert_metrics: tuple[str, ...] = ("demographic_parity_difference", "equalized_odds_difference")
    fairness_gate: bool = False         # edgefleet retrain refuses a challenger that worsens a disparity beyond tolerance

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["segment_fields"] = list(self.segment_fields)
        d["fairness_fields"] = list(self.fairness_fields)
        d["fairness_alert_metrics"] = list(self.fairness_alert_metrics)
        return d

    def fairness_policy(self) -> fairness.FairnessPolicy:
        return fairness.FairnessPolicy(tolerance=self.fairness_tolerance, min_ratio=self.fairness_min_ratio,
                                       min_count=self.fairness_min_count, confidence=self.fairness_confidence)

    def drift_policy(self) -> stats.DriftPolicy:
        return stats.DriftPolicy(psi_threshold=self.psi_threshold, alpha=self.alpha, min_count=self.min_count)

    def monitor_config(self) -> MonitorConfig:
        return MonitorConfig(window_seconds=self.window_seconds, segment_fields=self.segment_fields, policy=self.drift_policy())


def _number(key: str, value: Any, *, lo: float, hi: float = math.inf, integer: bool = False, open_lo: bool = False) -> Any:
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise FleetError(f"policy.{key}: expected {kind}, got {value!r}")
    if not math.isfinite(value) or value > hi or value < lo or (open_lo and value == lo):
        bound = f"{'>' if open_lo else '>='} {lo}" + (f" and <= {hi}" if math.isfinite(hi) else "")
        raise FleetError(f"policy.{key}: {value!r} must be {bound}")
    return int(value) if integer else float(value)


def validate(body: Any, base: Policy = Policy()) -> Policy:
    """``base`` updated with the keys of ``body``; FleetError (400) naming the first bad field."""
    if not isinstance(body, Mapping):
        raise FleetError("policy: expected a JSON object")
    known = {f.name for f in fields(Policy)}
    unknown = sorted(set(body) - known)
    if unknown:
        raise FleetError(f"policy.{unknown[0]}: unknown field (known: {', '.join(sorted(known))})")
    out = base.as_dict()
    for key, value in body.items():
        if key == "psi_threshold":
            out[key] = _number(key, value, lo=0.0, open_lo=True)
        elif key == "alpha":
            out[key] = _number(key, value, lo=0.0, hi=0.5, open_lo=True)
        elif key in ("min_count", "fire_after", "clear_after", "lookback_windows", "min_labeled", "fairness_min_count"):
            out[key] = _number(key, value, lo=1, integer=True)
        elif key == "retrain":
            out[key] = None if value is None else parse_retrain(value)
        elif key == "canary_min_count":
            out[key] = None if value is None else _number(key, value, lo=1, integer=True)
        elif key == "window_seconds":
            out[key] = _number(key, value, lo=0.0, open_lo=True)
        elif key in ("max_auroc_drop", "max_ap_drop", "fairness_tolerance", "fairness_min_ratio"):
            out[key] = _number(key, value, lo=0.0, hi=1.0)
        elif key == "fairness_confidence":
            out[key] = _number(key, value, lo=0.5, hi=0.999)
        elif key == "fairness_threshold":
            out[key] = None if value is None else _number(key, value, lo=0.0, hi=1.0)
        elif key == "fairness_fields":
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise FleetError("policy.fairness_fields: expected a list of field names")
            out[key] = list(dict.fromkeys(value))
        elif key == "fairness_alert_metrics":
            if not isinstance(value, list) or not all(v in fairness.METRICS for v in value):
                raise FleetError(f"policy.fairness_alert_metrics: expected a list of {', '.join(fairness.METRICS)}, got {value!r}")
            out[key] = list(dict.fromkeys(value))
        elif key == "fairness_reference":
            if not isinstance(value, Mapping) or not all(isinstance(k, str) and k and isinstance(v, (str, int)) and not isinstance(v, bool)
                                                         for k, v in value.items()):
                raise FleetError("policy.fairness_reference: expected an object of field name -> reference group value")
            out[key] = {k: str(v) for k, v in value.items()}
        elif key == "fairness_gate":
            if not isinstance(value, bool):
                raise FleetError(f"policy.fairness_gate: expected true or false, got {value!r}")
            out[key] = value
        elif key == "segment_fields":
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise FleetError("policy.segment_fields: expected a list of field names")
            if {"group", "tag", "all"} & set(value):
                raise FleetError("policy.segment_fields: 'group', 'tag' and 'all' are device cohort names")
            out[key] = list(dict.fromkeys(value))
        elif key == "webhook":
            if value is not None:
                parts = urlsplit(value) if isinstance(value, str) else None
                if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
                    raise FleetError(f"policy.webhook: expected an http(s) URL or null, got {value!r}")
            out[key] = value
        elif key == "canary_gate":
            if not isinstance(value, bool):
                raise FleetError(f"policy.canary_gate: expected true or false, got {value!r}")
            out[key] = value
    if out["lookback_windows"] < out["fire_after"] + out["clear_after"]:
        raise FleetError(f"policy.lookback_windows: {out['lookback_windows']} must be at least fire_after + clear_after "
                         f"({out['fire_after'] + out['clear_after']}), or a firing alert could never be seen to clear")
    stray = sorted(set(out["fairness_reference"]) - set(out["fairness_fields"]))
    if stray:
        raise FleetError(f"policy.fairness_reference: {stray[0]!r} is not one of fairness_fields {out['fairness_fields']}")
    out["segment_fields"] = tuple(out["segment_fields"])
    out["fairness_fields"] = tuple(out["fairness_fields"])
    out["fairness_alert_metrics"] = tuple(out["fairness_alert_metrics"])
    if isinstance(out["retrain"], Mapping):  # as_dict() of the base policy
        out["retrain"] = parse_retrain(out["retrain"])
    return Policy(**out)


def load(session: Any, model: str) -> Policy:
    """The stored policy of ``model``, or the defaults."""
    from fleet_server.monitoring.tables import MonitorPolicy

    row = session.get(MonitorPolicy, model)
    if row is None:
        return Policy()
    known = {f.name for f in fields(Policy)}
    return validate({k: v for k, v in row.policy.items() if k in known})  # fields a newer server wrote are ignored


def save(session: Any, model: str, policy: Policy) -> None:
    from fleet_server.db import utcnow
    from fleet_server.monitoring.tables import MonitorPolicy

    row = session.get(MonitorPolicy, model)
    if row is None:
        session.add(MonitorPolicy(model=model, policy=policy.as_dict(), updated_at=utcnow()))
    else:
        row.policy, row.updated_at = policy.as_dict(), utcnow()
