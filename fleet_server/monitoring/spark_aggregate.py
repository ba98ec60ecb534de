"""The monitoring aggregation on Spark, from a Parquet export of telemetry: for a fleet whose telemetry outgrows one database.

    export_telemetry(fleet, "telemetry-export/")          # edgefleet monitor export (the server's side)
    reports = aggregate(spark, "telemetry-export/", MonitorConfig(...))   # edgefleet monitor aggregate --engine spark

The export folder holds ``telemetry.parquet`` (the ``telemetry`` table; ``body`` as JSON text),
``devices.parquet`` (device id, group, tags) and ``manifests/<name>-v<version>.json``.

Spark does the heavy, per-row part and the driver only the small per-cell part, with the very same
functions as :mod:`fleet_server.monitoring.aggregate`, so the reports are equal, not close:

* drift: each partition parses its sketch bodies (and, for segments, the sampled predictions'
  features) and adds them into partial (window, cohort) histograms with ``histograms.add`` /
  ``RecordBinner``; the driver merges the partials. Counts are integers, so the merge order
  changes nothing; ``drift_report_from`` then builds the report.
* performance: Spark joins every outcome to the latest prediction of its entity created at or
  before the outcome's ``observed_at`` (ties as the server breaks them), keeps the newest outcome
  per prediction, and groups (score, label) by (window, cohort); the driver sorts each cell into
  prediction order (so float sums add in the same order) and calls ``performance_report_from``.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator, Mapping

from sqlalchemy import select

from fleet_server.core import Fleet
from fleet_server.db import Device, ModelVersion, TelemetryRecord
from fleet_server.monitoring import histograms as H
from fleet_server.monitoring.aggregate import (
    ALL,
    MonitorConfig,
    _is_positive,
    _parse_time,
    _segment_cohorts,
    _window,
    drift_report_from,
    performance_report_from,
)

EXPORT_BATCH = 50_000


def export_telemetry(fleet: Fleet, out_dir: str | Path) -> dict[str, int]:
    """Write the telemetry, devices and manifests as Parquet/JSON into ``out_dir``; returns row counts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out_dir)
    (out / "manifests").mkdir(parents=True, exist_ok=True)
    schema = pa.schema([("id", pa.string()), ("device_id", pa.string()), ("kind", pa.string()), ("created", pa.float64()),
                        ("model", pa.string()), ("model_version", pa.int64()), ("entity_id", pa.string()), ("score", pa.float64()),
                        ("label", pa.string()), ("body", pa.string())])
    T = TelemetryRecord
    n = 0
    tmp = out / "telemetry.parquet.tmp"
    with fleet.session() as s, pq.ParquetWriter(tmp, schema) as writer:
        q = select(T.id, T.device_id, T.kind, T.created, T.model, T.model_version, T.entity_id, T.score, T.label, T.body).order_by(T.created, T.id)
        batch: list[Any] = []
        for row in s.execute(q.execution_options(yield_per=EXPORT_BATCH)):
            batch.append(row)
            if len(batch) >= EXPORT_BATCH:
                writer.write_table(_table(batch, schema))
                n += len(batch)
                batch = []
        if batch:
            writer.write_table(_table(batch, schema))
            n += len(batch)
        devices = [(d.device_id, d.group, json.dumps(list(d.tags or []))) for d in s.scalars(select(Device))]
        models = [(m.name, m.version, m.manifest) for m in s.scalars(select(ModelVersion))]
    tmp.replace(out / "telemetry.parquet")
    pq.write_table(pa.table({"device_id": [d[0] for d in devices], "group": [d[1] for d in devices], "tags": [d[2] for d in devices]}),
                   out / "devices.parquet")
    for name, version, manifest in models:
        (out / "manifests" / f"{name}-v{version}.json").write_text(json.dumps(manifest))
    return {"telemetry": n, "devices": len(devices), "manifests": len(models)}


def _table(rows: list[Any], schema: Any) -> Any:
    import pyarrow as pa

    cols = list(zip(*rows))
    data = {f.name: list(c) for f, c in zip(schema, cols)}
    data["body"] = [json.dumps(b) for b in data["body"]]
    return pa.Table.from_pydict(data, schema=schema)


def load_export(spark: Any, export_dir: str | Path) -> tuple[Any, dict[str, list[str]], list[dict[str, Any]]]:
    """(telemetry DataFrame, device id -> cohorts, manifests) of an export folder."""
    import pyarrow.parquet as pq

    d = Path(export_dir)
    tel = spark.read.parquet(str(d / "telemetry.parquet"))
    devs = pq.read_table(d / "devices.parquet").to_pylist() if (d / "devices.parquet").exists() else []
    cohorts = {r["device_id"]: [f"group={r['group']}"] + [f"tag={t}" for t in json.loads(r["tags"] or "[]")] for r in devs}
    manifests = [json.loads(p.read_text()) for p in sorted((d / "manifests").glob("*.json"))]
    return tel, cohorts, manifests


def _hist_partials(manifest: Mapping[str, Any], config: MonitorConfig, cohorts_of_device: Mapping[str, list[str]]) -> Any:
    def run(batches: Iterator[Any]) -> Iterator[Any]:
        import pandas as pd

        cells: dict[tuple[float, str], H.Hist] = {}
        seg: dict[float, H.Hist] = {}
        rejected = 0
        binner = H.RecordBinner(manifest) if config.segment_fields else None

        def cell(table: dict[Any, H.Hist], key: Any) -> H.Hist:
            if key not in table:
                table[key] = H.empty_histogram(manifest)
            return table[key]

        for frame in batches:
            for kind, device_id, created, score, body in zip(frame["kind"].tolist(), frame["device_id"].tolist(), frame["created"].tolist(),
                                                            frame["score"].tolist(), frame["body"].tolist()):
                b = json.loads(body)
                w = _window(created, config.window_seconds)
                if kind == "sketch":
                    keys = [ALL] + (list(cohorts_of_device.get(device_id, [])) if config.device_cohorts else [])
                    probe = H.empty_histogram(manifest)
                    if not H.add(probe, b):
                        rejected += 1
                        continue
                    for key in keys:
                        H.add(cell(cells, (w, key)), probe)
                elif binner is not None:
                    feats = b.get("features")
                    score = None if score is None or (isinstance(score, float) and math.isnan(score)) else score
                    located = binner.locate(feats, score) if feats and score is not None else None
                    if located is None:
                        continue
                    binner.count(cell(seg, w), located)
                    for key in _segment_cohorts(feats, config.segment_fields):
                        binner.count(cell(cells, (w, key)), located)
        out = [("cell", w, c, json.dumps(h)) for (w, c), h in cells.items()] + [("segment_all", w, "", json.dumps(h)) for w, h in seg.items()]
        out.append(("rejected", 0.0, "", json.dumps(rejected)))
        yield pd.DataFrame(out, columns=["part", "window", "cohort", "value"])

    return run


def spark_histograms(tel: Any, manifest: Mapping[str, Any], config: MonitorConfig, cohorts_of_device: Mapping[str, list[str]]) -> dict[str, Any]:
    """``aggregate.histograms`` on Spark: partial histograms per partition, merged on the driver."""
    kinds = ["sketch", "prediction"] if config.segment_fields else ["sketch"]
    rows = (tel.where(tel.kind.isin(kinds) & (tel.model == manifest["name"]) & (tel.model_version == int(manifest["version"])))
            .select("kind", "device_id", "created", "score", "body")
            .mapInPandas(_hist_partials(manifest, config, cohorts_of_device), "part string, window double, cohort string, value string")
            .collect())
    cells: dict[tuple[float, str], H.Hist] = {}
    seg: dict[float, H.Hist] = {}
    rejected = 0
    for r in rows:
        if r["part"] == "rejected":
            rejected += int(json.loads(r["value"]))
            continue
        table: dict[Any, H.Hist] = cells if r["part"] == "cell" else seg
        key: Any = (r["window"], r["cohort"]) if r["part"] == "cell" else r["window"]
        if key not in table:
            table[key] = H.empty_histogram(manifest)
        H.add(table[key], json.loads(r["value"]))
    return {"cells": cells, "segment_all": seg, "rejected_sketches": rejected}


def _outcome_fields(manifest: Mapping[str, Any]) -> Any:
    def run(batches: Iterator[Any]) -> Iterator[Any]:
        for frame in batches:
            whens, ys = [], []
            for created, body in zip(frame["created"].tolist(), frame["body"].tolist()):
                b = json.loads(body)
                whens.append(_parse_time(b.get("observed_at")) or created)
                y = _is_positive(b.get("label"), manifest)
                ys.append(None if y is None else int(y))
            yield frame.drop(columns=["body"]).assign(when=whens, y=ys)

    return run


def _prediction_keys(config: MonitorConfig, cohorts_of_device: Mapping[str, list[str]]) -> Any:
    def run(batches: Iterator[Any]) -> Iterator[Any]:
        import pandas as pd

        for frame in batches:
            out = []
            for idx, device_id, created, score, body in zip(frame["idx"].tolist(), frame["device_id"].tolist(), frame["created"].tolist(),
                                                           frame["score"].tolist(), frame["body"].tolist()):
                if score is None or (isinstance(score, float) and math.isnan(score)):
                    continue
                w = _window(created, config.window_seconds)
                keys = [ALL] + _segment_cohorts(json.loads(body).get("features"), config.segment_fields)
                if config.device_cohorts:
                    keys += list(cohorts_of_device.get(device_id, []))
                out += [(idx, w, k) for k in keys]
            yield pd.DataFrame(out, columns=["idx", "window", "cohort"])

    return run


def spark_performance(tel: Any, manifest: Mapping[str, Any], config: MonitorConfig, cohorts_of_device: Mapping[str, list[str]]) -> dict[str, Any]:
    """``aggregate.performance_report`` on Spark: the outcome join and the grouping distributed."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    preds = (tel.where((tel.kind == "prediction") & (tel.model == manifest["name"]) & (tel.model_version == int(manifest["version"])))
             .withColumn("idx", F.row_number().over(Window.orderBy("created", "id")) - 1))
    outs = (tel.where(tel.kind == "outcome").select("id", "created", "entity_id", "body")
            .withColumn("oidx", F.row_number().over(Window.orderBy("created", "id")))
            .mapInPandas(_outcome_fields(manifest), "id string, created double, entity_id string, oidx int, when double, y int"))
    p = preds.where(preds.entity_id.isNotNull()).select(F.col("entity_id").alias("p_entity"), F.col("created").alias("p_created"), "idx")
    cand = (outs.join(p, (F.coalesce(outs.entity_id, F.lit("")) == p.p_entity) & (p.p_created <= outs.when), "left")
            .withColumn("rk", F.row_number().over(Window.partitionBy("oidx").orderBy(F.col("p_created").desc_nulls_last(),
                                                                                    F.col("idx").desc_nulls_last())))
            .where("rk = 1").cache())
    unmatched = cand.where("idx IS NULL").count()
    unknown = cand.where("idx IS NOT NULL AND y IS NULL").count()
    labels = (cand.where("idx IS NOT NULL AND y IS NOT NULL")
              .withColumn("lk", F.row_number().over(Window.partitionBy("idx").orderBy(F.col("when").desc(), F.col("oidx").desc())))
              .where("lk = 1").select(F.col("idx").alias("l_idx"), "y"))
    keyed = preds.select("idx", "device_id", "created", "score", "body").mapInPandas(
        _prediction_keys(config, cohorts_of_device), "idx int, window double, cohort string")
    scores = preds.select(F.col("idx").alias("s_idx"), "score")
    grouped = (keyed.join(scores, keyed.idx == scores.s_idx).join(labels, keyed.idx == labels.l_idx, "left")
               .groupBy("window", "cohort").agg(F.collect_list(F.struct("idx", "score", "y")).alias("items")).collect())
    cand.unpersist()
    scored: dict[tuple[float, str], tuple[list[float], list[tuple[float, bool]]]] = defaultdict(lambda: ([], []))
    for r in grouped:
        items = sorted(r["items"], key=lambda it: it["idx"])  # prediction order: float sums add as on the server
        scored[(r["window"], r["cohort"])] = ([it["score"] for it in items],
                                              [(it["score"], bool(it["y"])) for it in items if it["y"] is not None])
    return performance_report_from(dict(scored), manifest, config, int(unmatched), int(unknown))


def aggregate(spark: Any, export_dir: str | Path, config: MonitorConfig = MonitorConfig()) -> list[dict[str, Any]]:
    """Drift and performance reports for every model version in the export."""
    tel, cohorts, manifests = load_export(spark, export_dir)
    tel = tel.cache()
    out = []
    for m in manifests:
        out.append({"model": m["name"], "model_version": int(m["version"]),
                    "drift": drift_report_from(spark_histograms(tel, m, config, cohorts), m, config),
                    "performance": spark_performance(tel, m, config, cohorts)})
    tel.unpersist()
    return out
