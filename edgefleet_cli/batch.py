"""``edgefleet batch-score``: score a whole customer base on Spark into the operational database.

    edgefleet batch-score BUNDLE --pubkey KEY --input customers.parquet|.csv|'glob' --entity-column customerID \\
        --output postgresql://user:pw@host/db?table=churn_scores | sqlite:///ops.db?table=churn_scores | parquet:///dir \\
        [--master local[*] | spark://host:7077] [--run-id ID] [--batch-rows 10000] [--partitions N]

The driver verifies the bundle, then each Spark Python worker verifies and loads it once and scores
Arrow batches with the device runtime's Scorer (``runtimes.spark``). Rows the input schema refuses
go to the rejects table (entity id, field, reason) and are counted; the job still exits 0 when at
least one row scored. Re-running with the same ``--run-id`` changes nothing; a killed run re-run with
its id fills exactly the missing rows. The summary (rows, rejects, seconds, rows/s, Spark start-up,
output, run id) goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from edgefleet.errors import InputError
from edgefleet_cli.args import path, positive_int


def cmd_batch_score(args: argparse.Namespace) -> int:
    from edgefleet_cli.main import require

    require("batch-score", "pyspark", "pyarrow", "pandas")
    from runtimes.spark import BatchConfig, run_batch

    if not args.pubkey:
        raise InputError("--pubkey", "batch-score needs the trusted public key (--pubkey or the config file's pubkey)")
    cfg = BatchConfig(bundle=args.bundle, pubkey=args.pubkey, input=args.input, entity_column=args.entity_column,
                      output=args.output, master=args.master, run_id=args.run_id, batch_rows=args.batch_rows,
                      partitions=args.partitions)
    res = run_batch(cfg, stream=sys.stderr)
    if res.rows == 0 and res.rejects:
        raise InputError("--input", f"no row could be scored ({res.rejects:,} rejected); first: {res.first_reject}")
    note = f"; first rejected: {res.first_reject}" if res.rejects else ""
    print(f"batch-score: run {res.run_id}: scored {res.rows:,} rows, rejected {res.rejects:,}, in {res.seconds:.1f}s "
          f"({res.rows_per_second:,.0f} rows/s; Spark start-up {res.startup_seconds:.1f}s) on {args.master}; "
          f"output: {res.output}{note}", file=sys.stderr)
    return 0


def cmd_monitor_aggregate(args: argparse.Namespace) -> int:
    from edgefleet_cli.main import require

    require("monitor aggregate", "pyspark", "pyarrow", "pandas")
    import json
    from pathlib import Path

    from fleet_server.monitoring.aggregate import MonitorConfig
    from fleet_server.monitoring.spark_aggregate import aggregate
    from runtimes.spark.job import start_session

    export = Path(args.input)
    if not (export / "telemetry.parquet").exists():
        raise InputError("--input", f"{export} holds no telemetry.parquet: write one with `edgefleet monitor export --out {export}`")
    segments = tuple(f for f in (args.segment_fields or "").split(",") if f)
    try:
        config = MonitorConfig(window_seconds=args.window_seconds, segment_fields=segments)
    except ValueError as exc:
        raise InputError("--segment-fields", str(exc)) from None
    spark = start_session(args.master, app="edgefleet-monitor-aggregate")
    try:
        reports = aggregate(spark, export, config)
    finally:
        spark.stop()
    text = json.dumps(reports, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text)
    for r in reports:
        drift = [w for w in r["drift"]["windows"] if w["verdict"] == "drift"]
        print(f"monitor aggregate: {r['model']} v{r['model_version']}: {len(r['drift']['windows'])} drift cells ({len(drift)} drifting), "
              f"{len(r['performance']['windows'])} performance cells", file=sys.stderr)
    return 0


def cmd_monitor_export(args: argparse.Namespace) -> int:
    from edgefleet_cli.main import require

    require("monitor export", "pyarrow", "sqlalchemy")
    from pathlib import Path

    from fleet_server.core import Fleet, ServerConfig
    from fleet_server.monitoring.spark_aggregate import export_telemetry

    fleet = Fleet(ServerConfig(data_dir=Path(args.data_dir), db_url=args.db, embedded_broker=False))
    counts = export_telemetry(fleet, args.out)
    print(f"monitor export: {counts['telemetry']:,} telemetry rows, {counts['devices']} devices, {counts['manifests']} manifests "
          f"-> {args.out}", file=sys.stderr)
    return 0


def add_parsers(sub: Any) -> None:
    b = sub.add_parser("batch-score", help="score a whole input on Spark into the operational database (latest + history)")
    b.add_argument("bundle", type=path, help="bundle folder or .tar (verified before any worker loads it)")
    b.add_argument("--pubkey", type=path, help="trusted Ed25519 public key (PEM; default: the config file's pubkey)")
    b.add_argument("--input", required=True, help="Parquet or CSV: a file, a folder or a quoted glob")
    b.add_argument("--entity-column", required=True, help="the column that identifies a customer (the lookup key)")
    b.add_argument("--output", required=True, help="postgresql://.../db?table=T, sqlite:///file.db?table=T or parquet:///dir")
    b.add_argument("--master", default="local[*]", help="local[*] (default: Spark's embedded engine), local[N] or spark://host:7077")
    b.add_argument("--run-id", help="the run's id (default MODEL-UTCSTAMP); re-run a killed job with its id to finish it")
    b.add_argument("--batch-rows", type=positive_int, default=10_000, help="rows per Arrow batch (default 10000)")
    b.add_argument("--partitions", type=positive_int, help="split the input into N tasks (default: Spark's file splits)")
    b.set_defaults(func=cmd_batch_score, fleet_settings=("pubkey",))

    m = sub.add_parser("monitor", help="heavy monitoring jobs on Spark")
    msub = m.add_subparsers(dest="monitor_command", required=True, metavar="ACTION")
    a = msub.add_parser("aggregate", help="drift histograms and performance joins from a telemetry Parquet export, on Spark")
    a.add_argument("--engine", choices=["spark"], default="spark", help="spark (the only engine here; the server aggregates in its DB)")
    a.add_argument("--input", type=path, required=True, help="telemetry export folder (from `edgefleet monitor export`)")
    a.add_argument("--master", default="local[*]", help="local[*] (default) or spark://host:7077")
    a.add_argument("--window-seconds", type=float, default=86_400.0, help="window width (default 86400, as the server)")
    a.add_argument("--segment-fields", help="comma-separated customer-segment fields (as the model's monitoring policy)")
    a.add_argument("--out", type=path, help="write the JSON reports here (default stdout)")
    a.set_defaults(func=cmd_monitor_aggregate)
    e = msub.add_parser("export", help="write the fleet's telemetry, devices and manifests as Parquet for `monitor aggregate`")
    e.add_argument("--data-dir", type=path, default="fleet-data", help="the server's data dir (default ./fleet-data)")
    e.add_argument("--db", help="the server's database URL (default SQLite in the data dir)")
    e.add_argument("--out", type=path, required=True, help="export folder to write")
    e.set_defaults(func=cmd_monitor_export)
