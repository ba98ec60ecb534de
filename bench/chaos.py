"""The chaos run of tests/chaos outside pytest, for the figures of issue 10's note.

Compiles the churn LR model once (bench/_fleet.compile_bundles), then runs
``tests.chaos.harness.run_chaos`` on each stack asked for: the embedded broker + SQLite, and
Mosquitto (dynamic security) + a throw-away PostgreSQL (tests/support/postgres.py). Prints the
same figures as the test: devices converged out of N, ids sent / stored, lost, duplicates, and
every kill (component, moment, pause, what the rollout was doing). Exit status 1 when any stack
misses a promise (a device not on the target, an id lost or stored twice).

    .venv/bin/python bench/chaos.py [--devices 200] [--procs 10] [--seed 10] [--stack embedded,mosquitto]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from _fleet import ROOT, compile_bundles, raise_fd_limit

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--procs", type=int, default=10, help="device processes; 20%% of them are SIGKILLed")
    ap.add_argument("--seed", type=int, default=10)
    ap.add_argument("--stack", default="embedded,mosquitto")
    ap.add_argument("--produce-every", type=float, default=1.0, help="seconds between a device's telemetry puts")
    ap.add_argument("--produce-n", type=int, default=5, help="records per put")
    args = ap.parse_args()
    raise_fd_limit()

    from tests.chaos.harness import Chaos, run_chaos
    from tests.support.postgres import PostgresServer

    tmp = Path(tempfile.mkdtemp(prefix="edgefleet-chaos-"))
    ok = True
    try:
        bundles, _ = compile_bundles(tmp)
        paths = {v: bundles.make(v) for v in (1, 2)}
        for stack in args.stack.split(","):
            work = tmp / stack
            work.mkdir()
            pg = PostgresServer(work / "pg").start() if stack == "mosquitto" else None
            chaos = Chaos(work, stack, n_devices=args.devices, n_procs=args.procs, seed=args.seed, bundles=paths,
                          trust_key=bundles.public_path, pg_url=pg.url if pg else None, produce_every=args.produce_every,
                          produce_n=args.produce_n, kill_window=(0.0, 60.0), budget=600)
            try:
                res = run_chaos(chaos, converge_timeout=240)
            finally:
                chaos.close()
                if pg is not None:
                    pg.stop()
            print(res.report(), flush=True)
            good = (res.converged_server == res.converged_devices == args.devices and res.lost == 0
                    and res.duplicates == 0 and res.unknown == 0 and res.sent == res.stored)
            print(f"  => {'PASS' if good else 'FAIL'}", flush=True)
            ok = ok and good
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
