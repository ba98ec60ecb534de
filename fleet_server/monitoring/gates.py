"""The ML canary gate: a rollout halts when the new version scores the fleet unlike its champion.

``create_app`` registers ``ml_canary_gate`` in its Fleet's gate registry (``fleet.gates``). It applies to a rollout whose ``gates`` has ``"ml": true``
(or ``"ml": {overrides}``), or to every rollout of a model whose policy has ``canary_gate``;
``"ml": false`` turns it off. Rollouts ask gates when a step has settled; this one compares:

* **canary**: the rollout's targets that run the new version (``installed``). Its score
  histogram comes from their sketches of the new version (every scored row), or from their
  sampled predictions binned on the new manifest's score edges when those are more numerous
  (a device sends its sketch only when its window closes);
* **champion**: the version those devices ran before (``previous_version``). Its newest
  sampled predictions (fleet-wide, up to ``CHAMPION_ROWS``) are binned on the *new* version's
  score edges (the versions' reference bins differ). With fewer than ``min_count`` of them,
  the champion manifest's reference score histogram is compared with the canary's sampled
  scores binned on the champion's edges.

The gate fails (a reason string: the rollout halts and its devices roll back) when

* the canary's score distribution has drifted from the champion's: ``stats.drift_decision``
  with the policy's ``psi_threshold`` and ``alpha`` (material *and* significant at these n); or
* the canary's CBPE-estimated AUROC is more than ``max_auroc_drop`` below the champion's
  estimate (needs ``min_count`` sampled canary scores; the champion falls back to its manifest's
  reference AUROC).

Until the canary has ``canary_min_count`` (default ``min_count``) scored rows it answers
``rollouts.Wait``: the step holds, however long, and the rollout's history says why. A rollout
without a previous version (a first install) has nothing to compare and passes.
"""

from __future__ import annotations

import bisect
from collections import Counter as Tally
from typing import Any, Mapping, Sequence

from sqlalchemy import select
from sqlalchemy.orm import object_session

from fleet_server import rollouts
from fleet_server.core import Fleet
from fleet_server.db import ModelVersion, Rollout, RolloutTarget, TelemetryRecord
from fleet_server.errors import FleetError
from fleet_server.monitoring import histograms as H
from fleet_server.monitoring import stats
from fleet_server.monitoring.policy import Policy, load, validate

CHAMPION_ROWS = 20_000
_OVERRIDES = {"psi_threshold", "alpha", "min_count", "canary_min_count", "max_auroc_drop"}


def _bin(scores: Sequence[float], edges: Sequence[float]) -> list[int]:
    counts = [0] * (len(edges) + 1)
    for x in scores:
        counts[bisect.bisect_right(edges, x)] += 1
    return counts


def _scores(s: Any, model: str, version: int, devices: list[str] | None, limit: int | None = None) -> list[float]:
    T = TelemetryRecord
    q = select(T.score).where(T.kind == "prediction", T.model == model, T.model_version == version, T.score.is_not(None))
    if devices is not None:
        q = q.where(T.device_id.in_(devices))
    if limit is not None:
        q = q.order_by(T.created.desc()).limit(limit)
    return [float(x) for x in s.scalars(q)]


def _sketch_scores(s: Any, manifest: Mapping[str, Any], devices: list[str]) -> list[int]:
    T = TelemetryRecord
    hist = H.empty_histogram(manifest)
    q = select(T.body).where(T.kind == "sketch", T.model == manifest["name"], T.model_version == int(manifest["version"]),
                             T.device_id.in_(devices))
    for body in s.scalars(q):
        H.add(hist, body)  # a sketch in other bins is skipped
    return list(hist["score"]["counts"])


def _policy(s: Any, rollout: Rollout) -> Policy | None:
    ml = (rollout.gates or {}).get("ml")
    policy = load(s, rollout.model)
    if ml is False or (not ml and not policy.canary_gate):
        return None
    if isinstance(ml, Mapping):
        return validate({k: v for k, v in ml.items() if k in _OVERRIDES}, policy)
    return policy


def evaluate(s: Any, rollout: Rollout, targets: list[RolloutTarget], policy: Policy) -> dict[str, Any]:
    """The gate's evidence and decision: {"decision": "pass"|"wait"|"fail", "reason", ...}."""
    canary = [t.device_id for t in targets if t.state == "installed"]
    previous = Tally(t.previous_version for t in targets if t.state == "installed" and t.previous_version not in (None, rollout.version))
    if not canary or not previous:
        return {"decision": "pass", "reason": "no canary with a previous version to compare"}
    champion_version = previous.most_common(1)[0][0]
    rows = {mv.version: mv.manifest for mv in s.scalars(select(ModelVersion).where(
        ModelVersion.name == rollout.model, ModelVersion.version.in_([rollout.version, champion_version])))}
    new, old = rows[rollout.version], rows.get(champion_version)
    edges = list(new["reference"]["score"]["edges"])
    canary_scores = _scores(s, rollout.model, rollout.version, canary)
    sketch = _sketch_scores(s, new, canary)
    canary_counts = sketch if sum(sketch) >= len(canary_scores) else _bin(canary_scores, edges)
    n = sum(canary_counts)
    need = policy.canary_min_count or policy.min_count
    out: dict[str, Any] = {"canary_devices": len(canary), "canary_rows": n, "champion_version": champion_version}
    if n < need:
        return {**out, "decision": "wait",
                "reason": f"ml gate: canary v{rollout.version} has {n}/{need} scored rows on {len(canary)} device(s)"}
    drift_policy = policy.drift_policy()
    champion_scores = _scores(s, rollout.model, champion_version, None, CHAMPION_ROWS)
    if len(champion_scores) >= policy.min_count:
        verdict = stats.drift_decision(_bin(champion_scores, edges), canary_counts, drift_policy)
        out["score_baseline"] = f"v{champion_version} fleet predictions ({len(champion_scores)})"
    elif old is not None and len(canary_scores) >= policy.min_count:
        old_edges = list(old["reference"]["score"]["edges"])
        verdict = stats.drift_decision(old["reference"]["score"]["counts"], _bin(canary_scores, old_edges), drift_policy)
        out["score_baseline"] = f"v{champion_version} manifest reference"
    else:
        verdict = None
        out["score_baseline"] = None
    out["score_drift"] = verdict.as_dict() if verdict else None
    reasons = []
    if verdict is not None and verdict.verdict == "drift":
        reasons.append(f"score distribution differs from v{champion_version}'s: PSI {verdict.psi:.3f} "
                       f"(noise-corrected {verdict.psi_excess:.3f} > {policy.psi_threshold}, p={verdict.pvalue:.2g}, "
                       f"{verdict.n_cur} canary rows vs {out['score_baseline']})")
    if len(canary_scores) >= policy.min_count:
        est_new = stats.estimated_auroc(canary_scores)
        est_old: float | None
        if len(champion_scores) >= policy.min_count:
            est_old, base = stats.estimated_auroc(champion_scores), "estimated"
        else:
            ref_auroc = ((old or {}).get("reference", {}).get("metrics", {}) or {}).get("auroc")
            est_old, base = (None if ref_auroc is None else float(ref_auroc)), "reference"
        out["estimated_auroc"] = {"canary": est_new, "champion": est_old, "champion_source": base}
        if est_old is not None and est_old - est_new > policy.max_auroc_drop:
            reasons.append(f"estimated AUROC {est_new:.3f} is {est_old - est_new:.3f} below v{champion_version}'s {base} "
                           f"{est_old:.3f} (limit {policy.max_auroc_drop})")
    if reasons:
        return {**out, "decision": "fail", "reason": f"ml gate: canary v{rollout.version} on {len(canary)} device(s): " + "; ".join(reasons)}
    return {**out, "decision": "pass", "reason": None}


def ml_canary_gate(fleet: Fleet, rollout: Rollout, targets: list[RolloutTarget]) -> str | None:
    s = object_session(rollout)  # the reconcile pass's own transaction
    if s is None:
        with fleet.session() as s2:
            return ml_canary_gate_in(s2, rollout, targets)
    return ml_canary_gate_in(s, rollout, targets)


def ml_canary_gate_in(s: Any, rollout: Rollout, targets: list[RolloutTarget]) -> str | None:
    try:
        policy = _policy(s, rollout)
    except FleetError as exc:  # a bad "ml" override halts this rollout, not every reconcile pass
        return f"ml gate: gates.ml: {exc}"
    if policy is None:
        return None
    result = evaluate(s, rollout, targets, policy)
    if result["decision"] == "wait":
        return rollouts.Wait(result["reason"])
    return result["reason"] if result["decision"] == "fail" else None
