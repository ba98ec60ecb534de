"""Chaos: SIGKILL the broker, the server and 20 % of the devices during a 10/50/100 rollout and a
telemetry flow; every device converges and every telemetry id sent is stored exactly once.

Two stacks: the embedded broker + SQLite (the server's default; the broker dies with the server)
and Mosquitto with dynamic security + PostgreSQL. The default run uses 20 devices in 5
processes (one process SIGKILLed); ``slow`` runs 200 devices in 10 processes (two SIGKILLed).
Each kill fires once a seeded random number of devices (1..N-2) runs the target version, so it
lands inside the rollout; thresholds and pauses come from a seeded RNG (``CHAOS_SEED`` overrides
the seed). The figures are printed (``pytest -s``) and attached to a failure's message.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.chaos.harness import Chaos, run_chaos

SEED = int(os.environ.get("CHAOS_SEED", "10"))

SMALL = dict(n_devices=20, n_procs=5, produce_every=0.25, produce_n=5, kill_window=(0.0, 20.0), budget=150)
FULL = dict(n_devices=200, n_procs=10, produce_every=1.0, produce_n=5, kill_window=(0.0, 60.0), budget=600)


def _run(tmp_path: Path, stack: str, make_bundle: Callable[..., Path], keypair: dict[str, Any], pg_url: str | None,
         size: dict[str, Any], converge_timeout: float) -> None:
    bundles = {v: make_bundle(v) for v in (1, 2)}
    chaos = Chaos(tmp_path, stack, seed=SEED, bundles=bundles, trust_key=keypair["public_path"], pg_url=pg_url, **size)
    try:
        res = run_chaos(chaos, version=2, steps=[10, 50, 100], converge_timeout=converge_timeout)
    finally:
        chaos.close()
        logs = Path(tempfile.gettempdir()) / f"edgefleet-chaos-{stack}-{size['n_devices']}"
        chaos.keep_logs(logs)
    report = res.report() + f"\n  logs: {logs}"
    print("\n" + report)
    n = size["n_devices"]
    assert res.rollout.get("state") == "completed" and res.rollout.get("counts") == {"installed": n}, report
    assert res.converged_server == n and res.converged_devices == n, report
    killed = [k.component for k in res.kills]
    assert killed.count("server") + killed.count("broker") == 2 and ("broker" in killed) == (stack == "mosquitto"), report
    assert sum(c.startswith("devices[") for c in killed) == max(1, round(0.2 * size["n_procs"])), report
    assert res.sent > 0 and res.stored > 0, report
    assert res.lost == 0, report
    assert res.duplicates == 0 and res.unknown == 0, report
    assert res.sent == res.stored, report


@pytest.mark.timeout(150)
def test_chaos_embedded_sqlite_20_devices(tmp_path: Path, make_bundle: Callable[..., Path], keypair: dict[str, Any]) -> None:
    _run(tmp_path, "embedded", make_bundle, keypair, None, SMALL, converge_timeout=60)


@pytest.mark.timeout(150)
def test_chaos_mosquitto_postgres_20_devices(tmp_path: Path, make_bundle: Callable[..., Path], keypair: dict[str, Any],
                                             fresh_pg: str) -> None:
    _run(tmp_path, "mosquitto", make_bundle, keypair, fresh_pg, SMALL, converge_timeout=60)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_chaos_embedded_sqlite_200_devices(tmp_path: Path, make_bundle: Callable[..., Path], keypair: dict[str, Any]) -> None:
    _run(tmp_path, "embedded", make_bundle, keypair, None, FULL, converge_timeout=240)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_chaos_mosquitto_postgres_200_devices(tmp_path: Path, make_bundle: Callable[..., Path], keypair: dict[str, Any],
                                              fresh_pg: str) -> None:
    _run(tmp_path, "mosquitto", make_bundle, keypair, fresh_pg, FULL, converge_timeout=240)
