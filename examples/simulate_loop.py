"""The closed loop on telco churn: drift -> alert -> retrain -> compile -> gated staged rollout.

    python examples/simulate_loop.py                  # price increase: alert, retrain, v2 everywhere
    python examples/simulate_loop.py --no-drift       # control: same run, no price increase, no alert
    python examples/simulate_loop.py --bad-challenger # retrain on shuffled labels (--force): the canary gate stops it

Everything is real except the clock's scale: a FleetServer (SQLite, waitress, MQTT bridge,
reconciler, monitor thread), a Mosquitto broker (the server's embedded broker when Mosquitto is
not installed), N in-process device agents (``runtimes.python.agent.Agent``: model store,
outbox, sketches, MQTT), and ``edgefleet retrain`` started by the server as a subprocess when
the monitor fires a performance alert. A monitoring window is ``--window`` seconds instead of a
day; each device scores ``--rate`` customers a second through ``Agent.score`` and their churn
labels arrive one window later through ``Agent.record_outcome``.

Scenario: after ``--baseline`` windows, the operator raises prices 30% for two-year-contract
customers (``make_telco_churn(price_shift=0.3)`` for that segment only): their MonthlyCharges
move and their churn rises. v1 ranked them as safe, so its realized AUROC falls once the labels
arrive; the policy's ``retrain`` entry starts ``edgefleet retrain``, whose challenger must beat
v1 on the newest labeled slice before it is compiled, registered with provenance and rolled out
10 -> 50 -> 100 % behind the ML canary gate.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))

from edgefleet_cli.samples.telco_churn import CATEGORICAL, LABEL, NUMERIC, make_telco_churn  # noqa: E402

SEGMENT = ("Contract", "Two year")
PRICE_SHIFT = 0.3


class Population:
    """An endless stream of customers; ``drift`` switches the segment to the price-increase world."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.drift = False
        self._buf: list[dict[str, Any]] = []
        self._chunk = 0

    def _refill(self) -> None:
        import numpy as np
        import pandas as pd

        self._chunk += 1
        base = make_telco_churn(4000, seed=self.seed * 1000 + self._chunk)
        if self.drift:
            col, val = SEGMENT
            shifted = make_telco_churn(4000, seed=self.seed * 1000 + 500 + self._chunk, price_shift=PRICE_SHIFT)
            base = pd.concat([base[base[col] != val], shifted[shifted[col] == val]]).sample(frac=1.0, random_state=self._chunk)
        frame = base[CATEGORICAL + NUMERIC + [LABEL]]
        self._buf = [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()} for r in frame.to_dict("records")]
        self._buf.reverse()

    def switch(self, drift: bool) -> None:
        self.drift, self._buf = drift, []

    def next(self) -> dict[str, Any]:
        if not self._buf:
            self._refill()
        return self._buf.pop()


class Admin:
    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token

    def __call__(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> Any:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                text = r.read()
                return json.loads(text) if text else None
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{method} {path}: HTTP {exc.code}: {exc.read()[:300]!r}") from None


def _auroc(scores: list[float], labels: list[int]) -> float | None:
    from fleet_server.monitoring import stats

    if len(set(labels)) < 2:
        return None
    return float(stats.auroc(scores, labels))


def run(scenario: str = "drift", *, devices: int = 6, rate: float = 80.0, window: float = 4.0, baseline: int = 3,
        seed: int = 0, workdir: Path | None = None, max_seconds: float = 170.0, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run one scenario ("drift", "control" or "bad-challenger"); returns the measured numbers."""
    import shutil

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: F401 - a compiler dependency anyway
    from train_churn import make_pipeline

    from compiler import compile as compile_model
    from edgefleet import keys
    from fleet_server.core import ServerConfig
    from fleet_server.serve import FleetServer
    from runtimes.python.agent import Agent, AgentConfig

    wall0 = time.time()
    work = Path(workdir or tempfile.mkdtemp(prefix="edgefleet-loop-"))
    work.mkdir(parents=True, exist_ok=True)
    events: list[dict[str, Any]] = []
    state: dict[str, Any] = {"window0": None}

    def note(what: str, **kw: Any) -> None:
        t = time.time()
        w = None if state["window0"] is None else int(math.floor((t - state["window0"]) / window))
        events.append({"t": round(t - wall0, 1), "window": w, "event": what, **kw})
        log(f"[{t - wall0:6.1f}s | window {w if w is not None else '-':>2}] {what}")

    # -- v1: trained and compiled as a data scientist would ------------------------------------
    priv, pub = keys.generate_keypair(work / "keys", overwrite=True)
    df = make_telco_churn(6000, seed=seed)
    train, holdout = df.iloc[:4200], df.iloc[4200:].reset_index(drop=True)
    train.to_csv(work / "train.csv", index=False)
    v1 = make_pipeline("lr").fit(train[CATEGORICAL + NUMERIC], train[LABEL])
    r1 = compile_model(v1, holdout, targets=["onnx"], name="churn", version=1, private_key=keys.load_private_key(priv),
                       label=LABEL, out_dir=work / "churn-v1")
    assert r1.archive is not None
    note(f"v1 compiled (LogisticRegression, onnx): reference AUROC {r1.manifest['reference']['metrics']['auroc']:.3f}")

    # -- broker, server, devices --------------------------------------------------------------
    broker = None
    try:
        from tests.support.mqtt_broker import Mosquitto, mosquitto_binary

        mosquitto_binary()
        broker = Mosquitto(work).start()
        mqtt_kw: dict[str, Any] = {"mqtt_url": broker.url, "embedded_broker": False}
    except (ImportError, RuntimeError):
        mqtt_kw = {"embedded_broker": True, "embedded_mqtt_port": 0}
    cfg = ServerConfig(data_dir=work / "fleet", port=0, reconcile_seconds=0.25, monitor_seconds=window / 2,
                       trust_keys=[pub], **mqtt_kw)
    server = FleetServer(cfg).start()
    api = Admin(server.url, server.fleet.secrets.admin_token)
    agents: list[tuple[Agent, threading.Thread]] = []
    try:
        api("POST", "/api/v1/models", raw=r1.archive.read_bytes())
        trainer = "train_shuffled" if scenario == "bad-challenger" else "train_lr"
        command = ["edgefleet", "retrain", "--server", "{server}", "--model", "{model}", "--alert", "{alert}",
                   "--trainer", f"{ROOT / 'examples' / 'churn_trainers.py'}:{trainer}", "--reference-data", str(work / "train.csv"),
                   "--key", str(priv), "--window-seconds", str(5 * window), "--min-holdout", "300", "--margin", "0.01", "--quiet"]
        if scenario == "bad-challenger":
            command.append("--force")
        policy = {"window_seconds": window, "lookback_windows": 6, "fire_after": 2, "clear_after": 2, "min_count": 200,
                  "min_labeled": 200, "segment_fields": [SEGMENT[0]], "max_auroc_drop": 0.08, "max_ap_drop": 0.15,
                  "retrain": {"command": command, "on": ["performance"], "cooldown_seconds": 3600, "timeout_seconds": 120}}
        api("PUT", "/api/v1/models/churn/policy", policy)
        note(f"server {server.url}, broker {broker.url if broker else 'embedded'}; policy: {window:g}s windows, alert after "
             f"{policy['fire_after']} bad windows, retrain on performance alerts")
        for i in range(devices):
            tok = api("POST", "/api/v1/enrollment-tokens", {"group": "stores"})["token"]
            cred = api("POST", "/api/v1/devices/enroll", {"token": tok, "device_id": f"store-{i:02d}"})
            path = work / f"cred-{i}.json"
            path.write_text(json.dumps(cred))
            acfg = AgentConfig.from_credential(path, data_dir=work / "devices" / f"store-{i:02d}", poll_seconds=0.5, status_seconds=2.0,
                                               tick_seconds=0.05, backoff_base=0.05, backoff_cap=1.0, mqtt_reconnect_max=2.0,
                                               window_seconds=window / 2)
            agent = Agent(acfg)
            t = threading.Thread(target=agent.run, kwargs={"install_signal_handlers": False}, daemon=True)
            t.start()
            agents.append((agent, t))
        _wait(lambda: all(d["capabilities"] for d in api("GET", "/api/v1/devices")["devices"]), 30, "device status")
        r = api("POST", "/api/v1/rollouts", {"model": "churn", "version": 1, "steps": [100]})
        _wait(lambda: api("GET", f"/api/v1/rollouts/{r['id']}")["state"] == "completed", 30, "v1 on every device")
        note(f"v1 on all {devices} devices")

        # -- the simulated weeks -----------------------------------------------------------
        pop = Population(seed + 1)
        now = time.time()
        state["window0"] = math.ceil(now / window) * window
        time.sleep(state["window0"] - now)
        note(f"window 0 starts; {devices} devices x {rate:g} customers/s, labels arrive {window:g}s (one window) later")
        scored: list[dict[str, Any]] = []
        pending: list[tuple[float, int, str, int]] = []
        seen_alerts: set[int] = set()
        seen_versions = {1}
        seen_rollouts: dict[int, str] = {}
        seen_jobs = 0
        drift_at = state["window0"] + baseline * window
        drifted = False
        result: dict[str, Any] = {"scenario": scenario}
        next_poll = 0.0
        done_at: float | None = None
        tick, k = 0.1, 0
        carry = 0.0
        while True:
            t = time.time()
            if t - wall0 > max_seconds:
                note("time limit reached")
                break
            if scenario != "control" and not drifted and t >= drift_at:
                drifted = True
                pop.switch(True)
                note(f"PRICE INCREASE: +{PRICE_SHIFT:.0%} MonthlyCharges for {SEGMENT[0]}={SEGMENT[1]} customers; their churn rises")
            carry += rate * tick
            n, carry = int(carry), carry - int(carry)
            for i, (agent, _) in enumerate(agents):
                for _ in range(n):
                    rec = pop.next()
                    y = int(rec.pop(LABEL))
                    eid = f"c{k}"
                    k += 1
                    try:
                        p = agent.score(rec, eid)
                    except Exception:  # noqa: BLE001 - a device between models
                        continue
                    scored.append({"t": t, "v": p.version, "s": p.probability, "y": y, "drift": drifted, "seg": rec[SEGMENT[0]] == SEGMENT[1]})
                    pending.append((t + window, i, eid, y))
            while pending and pending[0][0] <= t:
                _, i, eid, y = pending.pop(0)
                agents[i][0].record_outcome(eid, y)
            if t >= next_poll:
                next_poll = t + 0.5
                for a in sorted(api("GET", "/api/v1/alerts?model=churn")["alerts"], key=lambda a: a["id"]):
                    if a["id"] not in seen_alerts:
                        seen_alerts.add(a["id"])
                        d = a["details"]
                        val = f"PSI {d['psi']:.3f}" if a["kind"] == "drift" and d.get("psi") is not None else (
                            f"{a['subject']} {d['value']:.3f} vs reference {d['reference']:.3f}" if d.get("value") is not None else "")
                        fired_w = None if d.get("fired_in_window") is None else int(round((d["fired_in_window"] - state["window0"]) / window))
                        note(f"ALERT #{a['id']} {a['kind']} v{a['version']} {a['cohort']} {a['subject']}: {val} (fired for window {fired_w})",
                             alert=a["id"], kind=a["kind"], version=a["version"], cohort=a["cohort"], subject=a["subject"], fired_window=fired_w)
                jobs = api("GET", "/api/v1/models/churn/retrains")["jobs"]
                for j in jobs[seen_jobs:]:
                    note(f"retrain job {j.get('job', '-')} {j['event']}" + (f" (alert #{j['alert']})" if j.get("alert") else "")
                         + (f": {j.get('result') or j.get('reason')}" if j["event"] != "started" else ""), job=j)
                seen_jobs = len(jobs)
                for m in api("GET", "/api/v1/models")["models"]:
                    for v in m["versions"]:
                        if v["version"] not in seen_versions:
                            seen_versions.add(v["version"])
                            met = (v["provenance"] or {}).get("metrics", {})
                            ch, cl = met.get("champion", {}), met.get("challenger", {})
                            note(f"v{v['version']} registered by edgefleet retrain: held-out AUROC champion {ch.get('auroc', float('nan')):.3f} -> "
                                 f"challenger {cl.get('auroc', float('nan')):.3f}, AP {ch.get('average_precision', float('nan')):.3f} -> "
                                 f"{cl.get('average_precision', float('nan')):.3f}" + (" (forced)" if met.get("forced") else ""))
                for ro in api("GET", "/api/v1/rollouts")["rollouts"]:
                    key = f"{ro['state']}:{ro['step_index']}"
                    if ro["version"] > 1 and seen_rollouts.get(ro["id"]) != key:
                        seen_rollouts[ro["id"]] = key
                        note(f"rollout {ro['id']} v{ro['version']}: {ro['state']} step {ro['step_index'] + 1}/{len(ro['steps'])} "
                             f"({ro['steps'][ro['step_index']]:g}%), counts {ro['counts']}" + (f"\n      reason: {ro['reason']}" if ro.get("reason") else ""))
                        if ro["state"] in ("halted", "completed") and done_at is None:
                            done_at = t
                            result["rollout"] = ro
            if scenario == "control" and t >= drift_at + 8 * window:
                note("control run: 8 windows after the would-be price increase")
                break
            if done_at is not None and _settled(result["rollout"]["state"], t - done_at, agents, window):
                note(f"settled: device versions {sorted({a.scorer.version if a.scorer else None for a, _ in agents}, key=str)}")
                break
            time.sleep(max(0.0, tick - (time.time() - t)))

        # -- measurements --------------------------------------------------------------------
        def auc(pred: Callable[[dict[str, Any]], bool]) -> tuple[float | None, int]:
            rows = [r for r in scored if pred(r) and r["t"] + window <= time.time()]
            return _auroc([r["s"] for r in rows], [r["y"] for r in rows]), len(rows)

        result["auroc_v1_baseline"], result["n_v1_baseline"] = auc(lambda r: r["v"] == 1 and not r["drift"])
        result["auroc_v1_drifted"], result["n_v1_drifted"] = auc(lambda r: r["v"] == 1 and r["drift"])
        result["auroc_v2_drifted"], result["n_v2_drifted"] = auc(lambda r: r["v"] == 2 and r["drift"])
        alerts = api("GET", "/api/v1/alerts?model=churn")["alerts"]
        result["alerts"] = alerts
        first_drift = [e for e in events if e.get("kind") == "drift"]
        first_perf = [e for e in events if e.get("kind") == "performance"]
        result["drift_alert_window"] = first_drift[0]["fired_window"] if first_drift else None
        result["performance_alert_window"] = first_perf[0]["fired_window"] if first_perf else None
        result["drift_started_window"] = baseline if scenario != "control" else None
        result["versions"] = {a.cfg.device_id: (a.scorer.version if a.scorer else None) for a, _ in agents}
        result["retrain_jobs"] = api("GET", "/api/v1/models/churn/retrains")["jobs"]
        models = api("GET", "/api/v1/models")["models"]
        result["registered"] = [v["version"] for m in models for v in m["versions"]]
        if 2 in result["registered"]:
            result["v2"] = api("GET", "/api/v1/models/churn/versions/2")["provenance"]
        perf = api("GET", f"/api/v1/models/churn/performance?version=1&start={state['window0']}")
        result["server_v1_realized"] = [(round((w["window_start"] - state["window0"]) / window), w["realized"].get("auroc"))
                                        for w in perf["windows"] if w["cohort"] == "all"]
        result["seconds"] = round(time.time() - wall0, 1)
        _summary(result, log)
        return result
    finally:
        for a, _ in agents:
            a.stop()
        for _, t in agents:
            t.join(10)
        server.stop()
        if broker is not None:
            broker.stop()
        if workdir is None:
            shutil.rmtree(work, ignore_errors=True)


OBSERVE_HALTED = 2.0  # seconds a halted rollout is watched for a device leaving v1 (8 reconcile passes, 4 assignment polls)


def _settled(state: str, since: float, agents: list[Any], window: float) -> bool:
    """How long the run goes on once the rollout of v2 has settled: a completed one three windows more (v2's
    scores of drifted customers get their labels for its realized AUROC), a halted one until every device is
    back on v1 and the halt is ``OBSERVE_HALTED`` old (at most a window, the old fixed wait)."""
    if state == "completed":
        return since >= 3 * window
    back = all(a.scorer is not None and a.scorer.version == 1 for a, _ in agents)
    return (back and since >= OBSERVE_HALTED) or since >= window


def _wait(cond: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _summary(r: dict[str, Any], log: Callable[[str], None]) -> None:
    log("")
    log(f"== {r['scenario']} run, {r['seconds']}s ==")
    log(f"alerts: {len(r['alerts'])}" + (f"; first drift alert for window {r['drift_alert_window']}, first performance alert for window "
                                          f"{r['performance_alert_window']} (price increase at window {r['drift_started_window']})"
                                          if r["alerts"] else ""))
    log(f"realized AUROC of v1: {_fmt(r['auroc_v1_baseline'])} before ({r['n_v1_baseline']} labeled), {_fmt(r['auroc_v1_drifted'])} after the "
        f"price increase ({r['n_v1_drifted']}); v2 after it: {_fmt(r['auroc_v2_drifted'])} ({r['n_v2_drifted']})")
    log("server's realized AUROC of v1 per window (all devices): " + ", ".join(f"w{w}: {_fmt(a)}" for w, a in r["server_v1_realized"]))
    if r.get("v2"):
        m = r["v2"]["metrics"]
        log(f"v2 provenance: alert #{((r['v2'].get('trigger') or {}).get('alert') or {}).get('id')}, parent v{r['v2']['parent']['version']}, "
            f"rows {r['v2']['rows']}, held-out AUROC {m['champion']['auroc']:.3f} -> {m['challenger']['auroc']:.3f}, "
            f"AP {m['champion']['average_precision']:.3f} -> {m['challenger']['average_precision']:.3f}, rollouts "
            + ", ".join(f"#{x['id']} {x['state']}" for x in r["v2"]["rollouts"]))
    log(f"device versions: {sorted(r['versions'].items())}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--no-drift", action="store_true", help="control run: no price increase (expect no alert)")
    g.add_argument("--bad-challenger", action="store_true", help="retrain on shuffled labels with --force: the ML canary gate stops it")
    ap.add_argument("--devices", type=int, default=6)
    ap.add_argument("--rate", type=float, default=80.0, help="customers scored per device per second")
    ap.add_argument("--window", type=float, default=4.0, help="seconds per monitoring window (a day, time-compressed)")
    ap.add_argument("--baseline", type=int, default=3, help="windows before the price increase")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="keep the work folder (server data, retrain logs) here")
    ap.add_argument("--json", help="write the measured numbers here")
    args = ap.parse_args()
    scenario = "control" if args.no_drift else "bad-challenger" if args.bad_challenger else "drift"
    r = run(scenario, devices=args.devices, rate=args.rate, window=args.window, baseline=args.baseline, seed=args.seed,
            workdir=Path(args.out) if args.out else None)
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
