"""From stored telemetry to drift and performance numbers per (model version, cohort, window).

Inputs are the ``telemetry`` rows (``fleet_server.db.TelemetryRecord``) and the model version's
manifest, whose reference histograms fix the bins (docs/bundle-format.md, "Reference
statistics"; the histogram arithmetic is in ``histograms``, the statistics in ``stats``).
Everything returned is plain JSON (non-finite numbers become ``None``).

Windows
    ``window_start = floor(created / window_seconds) * window_seconds`` on the message's
    ``created`` time (a sketch is created when the device closes its window, so it lands in
    the window where it ends). Realized metrics are grouped by the *prediction's* window, so a
    window's label coverage grows as delayed outcomes arrive.

Cohorts
    * ``all``: every sketch of the version (every scored record, sampled or not);
    * ``group=<g>`` and ``tag=<t>``: sketches of the devices in that group or with that tag
      (from the ``devices`` table, or a mapping passed in);
    * ``<field>=<value>`` for each configured customer-segment field: histograms built here from
      the raw features of sampled ``prediction`` messages, binned with the manifest's rule.
      Sketches cannot be split by customer, so these depend on ``sample_rate`` and on the
      privacy switch leaving ``features`` in.

Comparisons per cohort and window
    * ``vs_reference``: against the manifest's reference histograms (fleet and device cohorts).
      A customer segment differs from the whole population by construction (fiber customers pay
      more), so segments are not compared with the reference;
    * ``vs_baseline``: against the cohort's own first ``baseline_windows`` windows with data;
    * ``vs_rest``: against the rest of the fleet (other devices, or the other values of the same
      segment field) in the same window: input skew and bias between cohorts.
    The ``primary`` comparison, whose verdict feeds alerts, is ``vs_reference`` for fleet and
    device cohorts and ``vs_baseline`` for segments. A segment's own field is left out of its
    comparisons (it is constant there). Verdicts come from ``stats.drift_decision`` with alpha
    split over the fields and the score of one comparison (Bonferroni).

Outcomes
    An ``outcome`` is joined by ``entity_id`` to the latest prediction of the model created at or
    before the outcome's ``observed_at`` (else its ``created``). A later outcome for the same
    prediction replaces an earlier one. A label counts as positive when it equals the manifest's
    ``positive_class`` (numbers compare by value; ``True``/``False`` mean positive/negative).
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from fleet_server.db import Device, TelemetryRecord
from fleet_server.monitoring import histograms as H
from fleet_server.monitoring import stats

ALL = "all"
CBPE_ASSUMPTIONS = (
    "estimated AUROC/AP treat each score p as a probability of churn: valid when scores are calibrated "
    "(see the calibration check on labeled rows) and P(label | features) has not changed since training; "
    "covariate shift is fine, concept drift is not seen"
)

Hist = H.Hist


@dataclass(frozen=True)
class MonitorConfig:
    """Aggregation settings; times in seconds."""

    window_seconds: float = 86_400.0
    segment_fields: tuple[str, ...] = ()        # customer-segment fields read from prediction features
    device_cohorts: bool = True                 # cohorts by device group and tag
    baseline_windows: int = 1                   # a cohort's first windows with data form its baseline
    policy: stats.DriftPolicy = field(default_factory=stats.DriftPolicy)
    calibration_bins: int = 10

    def __post_init__(self) -> None:
        reserved = {"group", "tag", ALL} & set(self.segment_fields)
        if reserved:
            raise ValueError(f"segment_fields: {sorted(reserved)} would collide with device cohort names")
        if self.window_seconds <= 0 or self.baseline_windows < 1:
            raise ValueError("window_seconds must be positive and baseline_windows at least 1")


def _clean_dict(obj: dict[str, Any]) -> dict[str, Any]:
    cleaned: dict[str, Any] = _clean(obj)
    return cleaned


def _clean(obj: Any) -> Any:  # JSON-safe copy: non-finite floats become None, numpy scalars Python ones
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (np.floating, np.integer)):
        return _clean(obj.item())
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _window(created: float, width: float) -> float:
    return math.floor(created / width) * width


def device_cohorts(session: Session) -> dict[str, list[str]]:
    """device_id -> ["group=<g>", "tag=<t>", ...] from the devices table."""
    return {d.device_id: [f"group={d.group}"] + [f"tag={t}" for t in (d.tags or [])] for d in session.scalars(select(Device))}


def _rows(session: Session, kind: str, manifest: Mapping[str, Any] | None, start: float | None, end: float | None) -> list[Any]:
    """Rows (id, device_id, created, entity_id, score, body) of one kind, oldest first."""
    T = TelemetryRecord
    q = select(T.id, T.device_id, T.created, T.entity_id, T.score, T.body).where(T.kind == kind)
    if manifest is not None:
        q = q.where(TelemetryRecord.model == manifest["name"], TelemetryRecord.model_version == int(manifest["version"]))
    if start is not None:
        q = q.where(TelemetryRecord.created >= start)
    if end is not None:
        q = q.where(TelemetryRecord.created < end)
    return list(session.execute(q.order_by(TelemetryRecord.created, TelemetryRecord.id)))  # ties by id: one order on every run and engine


def _segment_cohorts(features: Mapping[str, Any] | None, segment_fields: Sequence[str]) -> list[str]:
    if not features:
        return []
    return [f"{f}={'<missing>' if features.get(f) is None else features.get(f)}" for f in segment_fields]


def histograms(
    session: Session, manifest: Mapping[str, Any], config: MonitorConfig = MonitorConfig(), *,
    start: float | None = None, end: float | None = None, cohorts_of_device: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Current counts per (window, cohort): sketches for fleet/device cohorts, features for segments."""
    W = config.window_seconds
    out: dict[tuple[float, str], Hist] = {}
    seg_all: dict[float, Hist] = {}
    rejected = 0
    if config.device_cohorts and cohorts_of_device is None:
        cohorts_of_device = device_cohorts(session)
    def cell(table: dict[Any, Hist], key: Any) -> Hist:
        if key not in table:
            table[key] = H.empty_histogram(manifest)
        return table[key]

    for row in _rows(session, "sketch", manifest, start, end):
        w = _window(row.created, W)
        keys = [ALL] + (list((cohorts_of_device or {}).get(row.device_id, [])) if config.device_cohorts else [])
        probe = H.empty_histogram(manifest)
        if not H.add(probe, row.body):
            rejected += 1  # bins from another manifest: never mixed in
            continue
        for key in keys:
            H.add(cell(out, (w, key)), probe)
    if config.segment_fields:
        binner = H.RecordBinner(manifest)
        for row in _rows(session, "prediction", manifest, start, end):
            feats = row.body.get("features")
            located = binner.locate(feats, row.score) if feats and row.score is not None else None
            if located is None:
                continue
            w = _window(row.created, W)
            binner.count(cell(seg_all, w), located)
            for key in _segment_cohorts(feats, config.segment_fields):
                binner.count(cell(out, (w, key)), located)
    return {"cells": out, "segment_all": seg_all, "rejected_sketches": rejected}


def _kind(cohort: str, segment_fields: Sequence[str]) -> str:
    if cohort == ALL:
        return "fleet"
    if cohort.split("=", 1)[0] in segment_fields:
        return "segment"
    return "device"


def drift_report(
    session: Session, manifest: Mapping[str, Any], config: MonitorConfig = MonitorConfig(), *,
    start: float | None = None, end: float | None = None, cohorts_of_device: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Drift of every cohort in every window, against the reference, its baseline and the rest."""
    agg = histograms(session, manifest, config, start=start, end=end, cohorts_of_device=cohorts_of_device)
    return drift_report_from(agg, manifest, config)


def drift_report_from(agg: Mapping[str, Any], manifest: Mapping[str, Any], config: MonitorConfig = MonitorConfig()) -> dict[str, Any]:
    """The drift report of ``histograms``' output (also built on Spark: fleet_server.monitoring.spark_aggregate)."""
    cells: dict[tuple[float, str], Hist] = agg["cells"]
    ref = H.reference_histogram(manifest)
    policy = config.policy
    by_cohort: dict[str, list[float]] = defaultdict(list)
    for w, c in sorted(cells):
        by_cohort[c].append(w)
    baselines: dict[str, tuple[set[float], Hist]] = {}
    for c, ws in by_cohort.items():
        base_ws = set(ws[: config.baseline_windows])
        hist = H.empty_histogram(manifest)
        for w in base_ws:
            H.add(hist, cells[(w, c)])
        baselines[c] = (base_ws, hist)
    windows = []
    for (w, c) in sorted(cells, key=lambda k: (k[0], k[1] != ALL, k[1])):
        cur = cells[(w, c)]
        kind = _kind(c, config.segment_fields)
        exclude = [c.split("=", 1)[0]] if kind == "segment" else []
        entry: dict[str, Any] = {"window_start": w, "window_end": w + config.window_seconds, "cohort": c, "kind": kind, "n": cur["n"]}
        entry["vs_reference"] = H.compare(ref, cur, manifest, policy) if kind != "segment" else None
        base_ws, base = baselines[c]
        entry["vs_baseline"] = None if w in base_ws else H.compare(base, cur, manifest, policy, exclude=exclude)
        entry["vs_rest"] = None
        if kind != "fleet":
            whole = cells.get((w, ALL)) if kind == "device" else agg["segment_all"].get(w)
            if whole is not None:
                rest = H.copy(whole)
                H.add(rest, cur, sign=-1)
                if rest["n"] > 0:
                    entry["vs_rest"] = H.compare(rest, cur, manifest, policy, exclude=exclude)
        entry["primary"] = "vs_baseline" if kind == "segment" else "vs_reference"
        primary = entry[entry["primary"]]
        entry["verdict"] = None if primary is None else primary["verdict"]
        windows.append(entry)
    return _clean_dict({
        "model": manifest["name"], "model_version": int(manifest["version"]), "window_seconds": config.window_seconds,
        "policy": asdict(policy), "rejected_sketches": agg["rejected_sketches"], "windows": windows,
    })


def alert_events(report: Mapping[str, Any], *, fire_after: int = 3, clear_after: int = 3) -> list[dict[str, Any]]:
    """Run AlertState per cohort over the report's windows in time order; returns fired/cleared events."""
    states: dict[str, stats.AlertState] = {}
    events = []
    for entry in report["windows"]:
        state = states.setdefault(entry["cohort"], stats.AlertState(fire_after, clear_after))
        verdict = entry["verdict"]
        primary = entry.get(entry["primary"]) or {}
        event = state.update(None if verdict in (None, "insufficient_data") else verdict == "drift")
        if event:
            events.append({"event": event, "cohort": entry["cohort"], "window_start": entry["window_start"],
                           "model": report["model"], "model_version": report["model_version"], "drifting": primary.get("drifting", [])})
    return events


def _is_positive(label: Any, manifest: Mapping[str, Any]) -> bool | None:
    classes = manifest["output"]["classes"]
    positive = manifest["output"].get("positive_class", classes[-1])
    if isinstance(label, bool):
        return label
    for cls, value in ((positive, True), (classes[0], False)):
        if isinstance(label, (int, float)) and isinstance(cls, (int, float)) and not isinstance(cls, bool):
            if float(label) == float(cls):
                return value
        elif str(label) == str(cls):
            return value
    return None


def _parse_time(text: Any) -> float | None:
    try:
        return dt.datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def join_outcomes(session: Session, manifest: Mapping[str, Any], *, start: float | None = None, end: float | None = None) -> dict[str, Any]:
    """Predictions of this version in [start, end) with the label of their outcome, if any."""
    preds = _rows(session, "prediction", manifest, start, end)
    by_entity: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for i, p in enumerate(preds):
        if p.entity_id is not None:
            by_entity[p.entity_id].append((p.created, i))
    labels: dict[int, tuple[float, bool]] = {}
    unmatched = unknown = 0
    for o in _rows(session, "outcome", None, start, None):
        cands = by_entity.get(o.entity_id or "")
        if not cands:
            unmatched += 1
            continue
        when = _parse_time(o.body.get("observed_at")) or o.created
        k = bisect.bisect_right(cands, (when, math.inf)) - 1
        if k < 0:
            unmatched += 1
            continue
        y = _is_positive(o.body.get("label"), manifest)
        if y is None:
            unknown += 1
            continue
        idx = cands[k][1]
        if idx not in labels or labels[idx][0] <= when:
            labels[idx] = (when, y)
    return {"predictions": preds, "labels": {i: y for i, (_, y) in labels.items()}, "unmatched_outcomes": unmatched, "unknown_labels": unknown}


def _metrics(scores: np.ndarray, labels: np.ndarray, n_bins: int) -> dict[str, Any]:
    out: dict[str, Any] = {"n_labeled": int(labels.size)}
    if labels.size:
        out.update(auroc=stats.auroc(scores, labels), average_precision=stats.average_precision(scores, labels),
                   positive_rate=float(labels.mean()))
        cal = stats.calibration_check(scores, labels, n_bins=n_bins)
        out["calibration"] = {k: cal[k] for k in ("ece", "hl_statistic", "hl_pvalue", "calibrated")}
    return out


def performance_report(
    session: Session, manifest: Mapping[str, Any], config: MonitorConfig = MonitorConfig(), *,
    start: float | None = None, end: float | None = None, cohorts_of_device: Mapping[str, Sequence[str]] | None = None,
    joined: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Estimated (CBPE, from scores) and realized (from joined outcomes) AUROC/AP per window and cohort.

    ``joined`` is ``join_outcomes`` of the same version and range, when the caller already has it (the monitor pass
    shares one join between this and the fairness report)."""
    if joined is None:
        joined = join_outcomes(session, manifest, start=start, end=end)
    if config.device_cohorts and cohorts_of_device is None:
        cohorts_of_device = device_cohorts(session)
    cells: dict[tuple[float, str], list[int]] = defaultdict(list)
    preds = joined["predictions"]
    for i, p in enumerate(preds):
        if p.score is None:
            continue
        w = _window(p.created, config.window_seconds)
        keys = [ALL] + _segment_cohorts(p.body.get("features"), config.segment_fields)
        if config.device_cohorts:
            keys += list((cohorts_of_device or {}).get(p.device_id, []))
        for key in keys:
            cells[(w, key)].append(i)
    labels = joined["labels"]
    scored = {key: ([preds[i].score for i in idx], [(preds[i].score, labels[i]) for i in idx if i in labels]) for key, idx in cells.items()}
    return performance_report_from(scored, manifest, config, joined["unmatched_outcomes"], joined["unknown_labels"])


def performance_report_from(
    scored: Mapping[tuple[float, str], tuple[Sequence[float], Sequence[tuple[float, bool]]]], manifest: Mapping[str, Any],
    config: MonitorConfig, unmatched_outcomes: int, unknown_labels: int,
) -> dict[str, Any]:
    """The performance report from (window, cohort) -> (scores, [(score, label) of the labeled ones]), each in
    prediction order (also built on Spark: fleet_server.monitoring.spark_aggregate)."""
    windows = []
    for (w, c) in sorted(scored, key=lambda k: (k[0], k[1] != ALL, k[1])):
        cell_scores, labeled = scored[(w, c)]
        scores = np.array(cell_scores, dtype=np.float64)
        y = np.array([lab for _, lab in labeled], dtype=np.float64)
        ys = np.array([sc for sc, _ in labeled], dtype=np.float64)
        est_auc = stats.estimated_auroc(scores)
        est_ap = stats.estimated_average_precision(scores)
        realized = _metrics(ys, y, config.calibration_bins)
        windows.append({
            "window_start": w, "window_end": w + config.window_seconds, "cohort": c, "kind": _kind(c, config.segment_fields),
            "n_predictions": int(scores.size), "mean_score": float(scores.mean()),
            "estimated": {"auroc": est_auc, "average_precision": est_ap},
            "realized": realized, "label_coverage": len(labeled) / scores.size,
            "gap": {"auroc": est_auc - realized.get("auroc", math.nan), "average_precision": est_ap - realized.get("average_precision", math.nan)},
        })
    return _clean_dict({
        "model": manifest["name"], "model_version": int(manifest["version"]), "window_seconds": config.window_seconds,
        "reference": manifest["reference"].get("metrics", {}), "assumptions": CBPE_ASSUMPTIONS,
        "unmatched_outcomes": unmatched_outcomes, "unknown_labels": unknown_labels, "windows": windows,
    })
