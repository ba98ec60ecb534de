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
    raise InputError("--engine", "the Spark monitoring aggregation is not built yet")


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
    a = msub.add_parser("aggregate", help="drift histograms and performance joins from a telemetry Parquet export")
    a.add_argument("--engine", choices=["spark"], default="spark")
    a.add_argument("--input", required=True, help="telemetry export folder (Parquet)")
    a.set_defaults(func=cmd_monitor_aggregate)
