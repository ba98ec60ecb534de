"""Fairness per customer segment: from sampled predictions and delayed outcomes to per-group
rates and disparities per (model version, window, sensitive field).

The formulas, intervals and verdicts are ``edgefleet.fairness`` (shared with the retraining
job's champion/challenger comparison). This module is the database side:

* rows are the version's sampled ``prediction`` messages in ``[start, end)``, labeled by
  ``aggregate.join_outcomes`` (the join realized AUROC uses: an outcome goes to the entity's
  latest prediction at or before ``observed_at``), grouped by the *prediction's* window;
* a row's group is the value of the sensitive field in its ``features`` (``<missing>`` when the
  field is null). "Predicted positive" is ``score > threshold``, the policy's
  ``fairness_threshold`` (the operating point the business acts on) or the manifest's;
* the reference group is the policy's ``fairness_reference[field]``, else the window's largest
  group;
* predictions sent without ``features`` (the device's privacy switch, ``include_features =
  false``) cannot be grouped. They are counted, and a window where no prediction has features
  says so (``privacy``) instead of guessing a group; a field that no sampled row carries is
  named in ``missing_fields``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Mapping

import numpy as np
from sqlalchemy.orm import Session

from edgefleet import fairness as F
from fleet_server.monitoring import aggregate, stats

PRIVACY_NOTE = ("no sampled prediction in this window carries features (the devices' privacy switch, include_features = false): "
                "the sensitive fields cannot be read, so no fairness metric is computed")


def _auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    return stats.auroc(scores, labels)


def fairness_report(session: Session, manifest: Mapping[str, Any], policy: Any, *, start: float | None = None,
                    end: float | None = None, window_seconds: float | None = None,
                    joined: dict[str, Any] | None = None) -> dict[str, Any]:
    """Per window and sensitive field: every group's rates and its disparities against the reference.

    ``joined``: ``aggregate.join_outcomes`` of the same version and range, when the caller already has it."""
    W = float(window_seconds or policy.window_seconds)
    fields = list(policy.fairness_fields)
    fp = policy.fairness_policy()
    threshold = float(policy.fairness_threshold if policy.fairness_threshold is not None else manifest["output"]["threshold"])
    if joined is None:
        joined = aggregate.join_outcomes(session, manifest, start=start, end=end)
    preds, labels = joined["predictions"], joined["labels"]
    cells: dict[float, list[int]] = defaultdict(list)
    no_features: dict[float, int] = defaultdict(int)
    seen: set[str] = set()
    for i, p in enumerate(preds):
        if p.score is None:
            continue
        w = math.floor(p.created / W) * W
        feats = p.body.get("features")
        if not isinstance(feats, dict):
            no_features[w] += 1
            continue
        seen.update(f for f in fields if f in feats)
        cells[w].append(i)
    windows = []
    for w in sorted(set(cells) | set(no_features)):
        idx = cells.get(w, [])
        entry: dict[str, Any] = {"window_start": w, "window_end": w + W, "n_predictions": len(idx) + no_features.get(w, 0),
                                 "n_without_features": no_features.get(w, 0), "privacy": not idx, "fields": {}}
        if not idx:
            entry["note"] = PRIVACY_NOTE
            windows.append(entry)
            continue
        if no_features.get(w):
            entry["note"] = (f"computed on the {len(idx)} of {entry['n_predictions']} predictions that carry features; the rest "
                             "came from devices with the privacy switch on, whose customers may differ")
        scores = np.array([preds[i].score for i in idx], dtype=np.float64)
        y = np.array([float(labels[i]) if i in labels else math.nan for i in idx], dtype=np.float64)
        for f in fields:
            if f not in seen:
                continue
            values = [preds[i].body["features"].get(f) for i in idx]
            groups = F.by_group(values, scores, scores > threshold, y, auroc=_auroc)
            ref = (policy.fairness_reference or {}).get(f)
            result = F.evaluate(groups, ref, fp, seed_parts=(manifest["name"], manifest["version"], w, f))
            entry["fields"][f] = {"groups": groups, **result}
        windows.append(entry)
    total_without = sum(no_features.values())
    out = {
        "model": manifest["name"], "model_version": int(manifest["version"]), "window_seconds": W, "fields": fields,
        "threshold": threshold, "policy": {"tolerance": fp.tolerance, "min_ratio": fp.min_ratio, "min_count": fp.min_count,
                                           "confidence": fp.confidence, "n_boot": fp.n_boot,
                                           "alert_metrics": list(policy.fairness_alert_metrics)},
        "reference_groups": dict(policy.fairness_reference or {}),
        "missing_fields": [f for f in fields if f not in seen] if cells else [],
        "predictions_without_features": total_without, "windows": windows,
    }
    if preds and not cells:
        out["privacy"] = ("every sampled prediction arrived without features (privacy switch on): fairness per segment "
                          "cannot be computed for this version; turn include_features on for a sample of devices")
    elif not fields:
        out["note"] = "the policy names no fairness_fields (PUT /api/v1/models/<name>/policy)"
    cleaned: dict[str, Any] = aggregate._clean_dict(out)
    return cleaned


def alert_inputs(report: Mapping[str, Any]) -> list[tuple[str, str, bool | None, dict[str, Any]]]:
    """(cohort ``field=group``, metric, bad or None, details) per window in time order, for the monitor's hysteresis."""
    out = []
    alert_metrics = report["policy"]["alert_metrics"]
    for entry in report["windows"]:
        for f, res in entry["fields"].items():
            ref = res["reference"]
            for g, comp in res["comparisons"].items():
                for metric in alert_metrics:
                    m = comp[metric]
                    verdict = m["verdict"]
                    bad = True if verdict == "disparity" else False if verdict == "within_tolerance" else None
                    out.append((f"{f}={g}", metric, bad, {
                        "window_start": entry["window_start"], "field": f, "group": g, "reference_group": ref,
                        "value": m["value"], "ci": m["ci"], "limit": m["limit"], "verdict": verdict,
                        "gaps": comp["gaps"], "n_group": res["groups"][g]["n"], "n_reference": res["groups"][ref]["n"],
                        "n_labeled_group": res["groups"][g]["n_labeled"], "n_labeled_reference": res["groups"][ref]["n_labeled"],
                    }))
    return out
