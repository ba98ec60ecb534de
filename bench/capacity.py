"""A capacity model for 10 million devices and 1 million scores/s fleet-wide, from per-node figures
measured by the benches here (docs/scale.md explains the production shape and every figure).

Each per-node input is a flag whose default is the figure measured on this 2-core machine (the
source is printed beside it); figures this repository cannot measure (a clustered broker's
connections per node, CDN prices) are marked ``assumed`` and are flags too. The model prints, per
resource: the fleet-wide load, the per-node capacity, the nodes needed at a utilisation ceiling,
what a 10M-device rollout costs in time and egress, and which single-node figure limits the whole.

``--check-fanout N P95_S``: the model's single-node fan-out prediction for N devices, against a
measured p95 (e.g. ``bench/rollout.py --devices 10000``), with PASS when within +-50 %.

    .venv/bin/python bench/capacity.py
    .venv/bin/python bench/capacity.py --check-fanout 10000 22.37
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    value: float
    unit: str
    source: str


def figures(a: argparse.Namespace) -> dict[str, Figure]:
    return {
        "ingest": Figure(a.ingest_per_s, "records/s stored", "bench/ingest.py, MQTT -> SQLite, one server process + parser child (make bench, 2026-12-03 15:41)"),
        "fanout": Figure(a.fanout_per_s, "assignments/s signed+stored+published",
                         "bench/rollout.py 10,000 devices: 10,000 assignments received by p95 6.05 s after the POST"),
        "converge_1k": Figure(a.converge_1k_s, "s p95 to converge, 1,000 devices", "bench/rollout.py v1->v2 [100]"),
        "raw_fanout_1k": Figure(a.raw_1k_s, "s p95 raw broker fan-out, 1,000 QoS1", "bench/rollout.py baseline"),
        "artifact": Figure(a.artifact_kib, "KiB per device per rollout", "bench/rollout.py (LR onnx variant); RF-100 bundles are larger"),
        "predict": Figure(a.predict_per_s, "req/s REST predict, 32 clients", "bench/predict.py (waitress, one process, predict fast path)"),
        "spark": Figure(a.spark_rows_per_s, "rows/s batch scoring, 2 cores", "bench/batch_score.py local[2], RF-100 (README)"),
        "broker_conns": Figure(a.broker_conns, "MQTT connections per broker node", "assumed: EMQX/VerneMQ published sizing, not measured here"),
        "kafka_mb": Figure(a.kafka_mb_s, "MB/s per Kafka broker", "assumed: a conservative figure for one broker, not measured here"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=float, default=10e6)
    ap.add_argument("--scores-per-s", type=float, default=1e6, help="fleet-wide scores per second (on devices)")
    ap.add_argument("--sample", type=float, default=0.01, help="fraction of predictions sent as raw telemetry")
    ap.add_argument("--sketch-seconds", type=float, default=300.0, help="each device sends one sketch per this many seconds")
    ap.add_argument("--record-bytes", type=float, default=600.0)
    ap.add_argument("--utilisation", type=float, default=0.6, help="plan each node to this fraction of its measured capacity")
    ap.add_argument("--ingest-per-s", type=float, default=37_460.0)
    ap.add_argument("--fanout-per-s", type=float, default=1_650.0)
    ap.add_argument("--converge-1k-s", type=float, default=1.81)
    ap.add_argument("--raw-1k-s", type=float, default=0.16)
    ap.add_argument("--artifact-kib", type=float, default=20.0)
    ap.add_argument("--predict-per-s", type=float, default=2_139.0)
    ap.add_argument("--spark-rows-per-s", type=float, default=14_570.0)
    ap.add_argument("--broker-conns", type=float, default=1e6)
    ap.add_argument("--kafka-mb-s", type=float, default=50.0)
    ap.add_argument("--egress-usd-per-gb", type=float, default=0.02, help="assumed CDN price")
    ap.add_argument("--reconciler-shards", type=int, default=8, help="rollout reconcilers, each owning a hash range of device ids")
    ap.add_argument("--check-fanout", nargs=2, type=float, metavar=("N", "P95_S"))
    a = ap.parse_args()
    f = figures(a)
    u = a.utilisation

    print("per-node figures (defaults measured here; override with flags):")
    for name, fig in f.items():
        print(f"  {name:14} {fig.value:>12,.2f} {fig.unit:42} {fig.source}")

    # single-node fan-out: a fixed latency (broker + fetch of the first devices) plus N / the node's bottleneck rate,
    # both read from the 1,000-device run
    fixed = f["raw_fanout_1k"].value
    rate_1k = 1000.0 / max(f["converge_1k"].value - fixed, 1e-9)  # devices converged per second at the bottleneck
    predict_converge = lambda n: fixed + n / rate_1k  # noqa: E731

    telemetry = a.devices / a.sketch_seconds + a.scores_per_s * a.sample
    rows = [
        ("MQTT connections", a.devices, f["broker_conns"].value, "connections"),
        ("telemetry -> Kafka", telemetry * a.record_bytes / 1e6, f["kafka_mb"].value, "MB/s"),
        ("drift aggregation (Spark)", telemetry, f["spark"].value, "records/s"),
        ("telemetry into SQL (if kept)", telemetry, f["ingest"].value, "records/s"),
        ("REST scoring (if 1M/s were REST)", a.scores_per_s, f["predict"].value, "req/s"),
    ]
    print(f"\nload for {a.devices:,.0f} devices, {a.scores_per_s:,.0f} scores/s on devices, {a.sample:.0%} of predictions sampled, "
          f"one sketch per device per {a.sketch_seconds:.0f} s; nodes planned at {u:.0%} of measured capacity:")
    print(f"  {'resource':34} {'load':>14} {'per node':>12} {'nodes':>7}")
    need = []
    for label, load, cap, unit in rows:
        nodes = math.ceil(load / (cap * u))
        need.append((nodes, label))
        print(f"  {label:34} {load:>14,.0f} {cap:>12,.0f} {nodes:>7}  {unit}")

    per_shard = a.devices / a.reconciler_shards
    t_rollout = per_shard / f["fanout"].value
    egress_gb = a.devices * f["artifact"].value * 1024 / 1e9
    print(f"\n10M-device rollout: {a.reconciler_shards} reconciler shards x {f['fanout'].value:,.0f} assignments/s -> every assignment "
          f"published in {t_rollout / 60:.1f} min (one node alone: {a.devices / f['fanout'].value / 3600:.1f} h); "
          f"artifact egress {egress_gb:,.0f} GB ({egress_gb * a.egress_usd_per_gb:,.0f} USD at {a.egress_usd_per_gb} USD/GB, from a CDN/object store, "
          f"content-addressed so every device of a variant fetches the same object)")
    print(f"single-node fan-out model: converge p95(N) = {fixed:.2f} s + N / {rate_1k:,.0f} per s "
          f"-> 10,000 devices {predict_converge(1e4):.1f} s, 100,000 devices {predict_converge(1e5):.0f} s")
    worst = max(need)
    print(f"most limiting single-node figure (most nodes): {worst[1]} ({worst[0]} nodes); the rollout's own limit is the "
          f"reconciler's {f['fanout'].value:,.0f} assignments/s per shard")
    if a.check_fanout:
        n, measured = a.check_fanout
        pred = predict_converge(n)
        ok = abs(pred - measured) <= 0.5 * measured
        print(f"check: model predicts p95 {pred:.1f} s for {n:,.0f} devices on one node, measured {measured:.1f} s "
              f"(ratio {measured / pred:.2f}; within +-50 %): {'PASS' if ok else 'FAIL'}")


if __name__ == "__main__":
    main()
