"""Labeled rows for retraining: sampled predictions joined to their delayed outcomes.

``labeled_rows`` runs ``aggregate.join_outcomes`` (same join rule as realized AUROC: an
outcome goes to the entity's latest prediction at or before ``observed_at``) for every version
of the model with predictions in ``[start, end)``, and returns one row per labeled prediction
that carries its features (the device's privacy switch can leave them out; those are counted,
not returned): the raw features, ``label`` (the manifest's class value), ``score``,
``model_version``, ``device_id``, ``entity_id`` and ``ts`` (the prediction's time, unix
seconds), oldest first. ``limit`` keeps the newest rows.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from fleet_server.db import ModelVersion, TelemetryRecord
from fleet_server.monitoring import aggregate

DEFAULT_LIMIT = 200_000


def labeled_rows(session: Session, model: str, *, start: float | None, end: float | None, version: int | None = None,
                 limit: int = DEFAULT_LIMIT) -> dict[str, Any]:
    T = TelemetryRecord
    q = select(T.model_version).distinct().where(T.kind == "prediction", T.model == model, T.model_version.is_not(None))
    if start is not None:
        q = q.where(T.created >= start)
    if end is not None:
        q = q.where(T.created < end)
    versions = sorted(int(v) for v in session.scalars(q) if v is not None)
    if version is not None:
        versions = [v for v in versions if v == version]
    manifests = {mv.version: mv.manifest for mv in session.scalars(
        select(ModelVersion).where(ModelVersion.name == model, ModelVersion.version.in_(versions)))}
    rows: list[dict[str, Any]] = []
    no_features = predictions = 0
    label_column = None
    for v in versions:
        manifest = manifests.get(v)
        if manifest is None:
            continue
        label_column = label_column or (manifest.get("source") or {}).get("label")
        classes = manifest["output"]["classes"]
        positive = manifest["output"].get("positive_class", classes[-1])
        negative = next((c for c in classes if c != positive), classes[0])
        joined = aggregate.join_outcomes(session, manifest, start=start, end=end)
        predictions += len(joined["predictions"])
        for i, y in joined["labels"].items():
            p = joined["predictions"][i]
            feats = p.body.get("features")
            if not isinstance(feats, dict):
                no_features += 1
                continue
            rows.append({**feats, "label": positive if y else negative, "score": p.score, "model_version": v,
                         "device_id": p.device_id, "entity_id": p.entity_id, "ts": p.created})
    rows.sort(key=lambda r: r["ts"])
    truncated = len(rows) > limit
    if truncated:
        rows = rows[-limit:]
    return {"model": model, "start": start, "end": end, "versions": versions, "label_column": label_column,
            "predictions": predictions, "labeled_without_features": no_features, "count": len(rows),
            "truncated": truncated, "rows": rows}
