"""The founding article's own example, with edgefleet: six days of card fraud, drift, retrain, gated rollout.

    python -m examples.fraud.run --out DIR        # from the checkout's root; about 2 minutes

The article's companion repository (a CDSW demo) trains a 20-tree random forest on Kaggle's
credit-card transactions, serves it behind CDSW's model API (``{"feature": "<29 numbers>"}`` ->
``{"result": 0|1}``), and runs a daily job that computes the AUROC of the new day and starts a
retrain job when it falls below 0.9. Here every piece is edgefleet's, and nothing is churn-specific:

* **data**: ``examples.fraud.data`` (Kaggle's schema, 0.17 % fraud, each day's columns multiplied
  by 1 ± up to 10 %; days 5 and 6 carry a stronger drift and a new fraud pattern);
* **v1**: ``examples.fraud.model`` fitted on 70 % of day 1, compiled to ONNX (parity-checked),
  signed, published to a real fleet server (SQLite, waitress, its reconciler) and rolled out to
  ``--devices`` payment gateways, each a real ``runtimes.python.agent.Agent`` (model store,
  outbox, sketches) talking HTTP to the server;
* **each day** is one monitoring window of ``--day-seconds`` (time-compressed). The gateways
  score the day's transactions through ``Agent.score`` at a steady rate, one thread each; the
  day's fraud report (the delayed labels) reaches the fleet server after the traffic, as outcome
  messages joined to the predictions by transaction id; then the daily job runs one monitor pass
  as of the day's end (``POST /api/v1/monitor/run``) and reads the fleet's realized AUROC/AP and
  drift (PSI against v1's reference) of that day's window;
* **the threshold**: edgefleet alerts when a window's AUROC is more than ``max_auroc_drop`` below
  the model's reference AUROC; the policy sets ``max_auroc_drop = reference - 0.9``, so v1's
  alert fires exactly when the day's AUROC falls below the companion's 0.9;
* **the loop**: the performance alert starts ``edgefleet retrain`` (the policy's ``retrain``
  entry; the server runs it as a subprocess): champion/challenger on the newest labeled slice,
  trainer ``examples.fraud.model:train_rf`` on day 1's training rows plus the last two days of
  labeled telemetry, ONNX compile with the same parity gate, upload with provenance, and a
  10 -> 50 -> 100 % rollout behind the ML canary gate, which day 6's traffic drives.

AUROC and AP here are computed on the model's probabilities. The companion computed them on
hard 0/1 predictions (``model.predict``), which is wrong: a ranking metric of a thresholded
score measures one operating point, not the ranking (with 0.17 % fraud it mostly measures
recall at 0.5). The table's "0/1 AUROC" column shows what that way reports, for contrast.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from edgefleet.errors import EdgefleetError
from edgefleet.http import HttpClient
from examples.fraud.data import FEATURES, LABEL, make_days
from examples.fraud.model import make_pipeline

ROOT = Path(__file__).resolve().parents[2]
MODEL = "fraud"
THRESHOLD = 0.9          # the companion's retrain rule: AUROC of the new day below 0.9
GROUP = "gateways"
CLOSE = 0.85             # the gateways stop scoring a day at 85 % of its window, so its sketch lands in it
LATE = 0.25              # a day may start this far into its window: its traffic (half a window) still ends before CLOSE


class ExampleError(RuntimeError):
    """The example could not complete a step (server, rollout or retrain did not answer in time)."""


def _wait(cond: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(every)
    raise ExampleError(f"timed out after {timeout:g}s waiting for {what}")


def _auroc_hard(labels: list[int], probs: list[float]) -> float | None:
    """AUROC of 0/1 predictions at 0.5: the companion's (wrong) metric, shown for contrast."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, [int(p > 0.5) for p in probs])) if len(set(labels)) == 2 else None


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "  n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


class Fleet:
    """The server, its admin client and the gateways (agents), started and stopped together."""

    def __init__(self, work: Path, pub: Path, devices: int, day_seconds: float) -> None:
        from fleet_server.core import ServerConfig
        from fleet_server.serve import FleetServer

        cfg = ServerConfig(data_dir=work / "fleet", port=0, reconcile_seconds=0.25, monitor_seconds=3600.0,
                           trust_keys=[pub], embedded_broker=False)  # HTTP only; the daily job runs the monitor
        self.server = FleetServer(cfg).start()
        self.api = HttpClient(self.server.url, self.server.fleet.secrets.admin_token, error=ExampleError)
        self.work, self.devices, self.day_seconds = work, devices, day_seconds
        self.agents: list[Any] = []
        self.threads: list[threading.Thread] = []

    def enroll(self) -> None:
        from runtimes.python.agent import Agent, AgentConfig

        for i in range(self.devices):
            dev = f"gw-{i + 1:02d}"
            tok = self.api.request("POST", "/api/v1/enrollment-tokens", {"group": GROUP})["token"]
            cred = self.api.request("POST", "/api/v1/devices/enroll", {"token": tok, "device_id": dev})
            path = self.work / f"cred-{dev}.json"
            path.write_text(json.dumps(cred))
            cfg = AgentConfig.from_credential(path, data_dir=self.work / "devices" / dev, poll_seconds=0.5, status_seconds=1.0,
                                              tick_seconds=0.05, backoff_base=0.05, backoff_cap=1.0,
                                              window_seconds=self.day_seconds)
            agent = Agent(cfg)
            t = threading.Thread(target=agent.run, kwargs={"install_signal_handlers": False}, name=f"agent-{dev}", daemon=True)
            t.start()
            self.agents.append(agent)
            self.threads.append(t)
        _wait(lambda: all(d["capabilities"] for d in self.api.request("GET", "/api/v1/devices")["devices"]), 30, "gateway status")

    def drained(self) -> bool:
        return all(a.outbox.depth() == 0 for a in self.agents)

    def stop(self) -> None:
        for a in self.agents:
            a.stop()
        for t in self.threads:
            t.join(10)
        self.server.stop()


def _window(report: dict[str, Any], start: float) -> dict[str, Any] | None:
    return next((w for w in report["windows"] if w["cohort"] == "all" and abs(w["window_start"] - start) < 1e-6), None)


def _day_metrics(fleet: Fleet, start: float, versions: list[int]) -> dict[str, Any]:
    """The fleet's own numbers for one day (window): realized AUROC/AP per version, PSI of v1's inputs."""
    end = start + fleet.day_seconds
    out: dict[str, Any] = {"by_version": {}}
    for v in versions:
        perf = fleet.api.request("GET", f"/api/v1/models/{MODEL}/performance?version={v}&start={start}&end={end}")
        w = _window(perf, start)
        r = (w or {}).get("realized", {})
        out["by_version"][v] = {"auroc": r.get("auroc"), "average_precision": r.get("average_precision"),
                                "n_labeled": r.get("n_labeled", 0), "n": (w or {}).get("n_predictions", 0)}
    drift = fleet.api.request("GET", f"/api/v1/models/{MODEL}/drift?version={versions[0]}&start={start}&end={end}")
    w = _window(drift, start)
    ref = (w or {}).get("vs_reference") or {}
    fields = ref.get("fields") or {}
    if fields:
        name = max(fields, key=lambda k: fields[k].get("psi") or 0.0)
        out["max_psi"] = {"field": name, "psi": fields[name].get("psi")}
        out["score_psi"] = (ref.get("score") or {}).get("psi")
        out["drifting"] = [f for f in ref.get("drifting", []) if f != "<score>"]
    return out


def _retrain(fleet: Fleet, log: Callable[[str], None], timeout: float) -> dict[str, Any]:
    """Follow the retrain job the alert started: its exit, its log, the version and rollout it made."""
    api = fleet.api
    job = _wait(lambda: next((j for j in api.request("GET", f"/api/v1/models/{MODEL}/retrains")["jobs"] if j["event"] == "started"), None),
                10, "the retrain job to start")
    log(f"   retrain job {job['job']} started by the server for alert #{job['alert']}: edgefleet retrain ... --trainer "
        "examples.fraud.model:train_rf")
    done = _wait(lambda: next((j for j in api.request("GET", f"/api/v1/models/{MODEL}/retrains")["jobs"]
                               if j["event"] == "exited" and j["job"] == job["job"]), None), timeout, "the retrain job to finish", 0.5)
    for line in Path(job["log"]).read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("[retrain]"):
            log(f"     {line}")
    log(f"   retrain job {done['result']} in {done['seconds']}s")
    out: dict[str, Any] = {"job": done}
    rollouts = [r for r in api.request("GET", "/api/v1/rollouts")["rollouts"] if r["model"] == MODEL and r["version"] > 1]
    if rollouts:
        r = rollouts[0]
        mv = api.request("GET", f"/api/v1/models/{MODEL}/versions/{r['version']}")
        prov = mv["provenance"] or {}
        m = prov.get("metrics", {})
        out.update(version=r["version"], rollout_id=r["id"], provenance=prov)
        log(f"   v{r['version']} published ({', '.join(mv['formats'])}, signed, provenance: parent v{prov.get('parent', {}).get('version')}, "
            f"held-out AUROC {_fmt(m.get('champion', {}).get('auroc'))} -> {_fmt(m.get('challenger', {}).get('auroc'))}); "
            f"rollout #{r['id']} {'/'.join(f'{s:g}' for s in r['steps'])} % behind the ML canary gate")
    else:
        log("   no new version: the challenger did not beat the champion (see the retrain lines above)")
    return out


def _parallel(fleet: Fleet, work: Callable[[int], None]) -> None:
    """``work(g)`` for every gateway g at once, one thread each: gateways score their own traffic."""
    errors: list[BaseException] = []

    def one(g: int) -> None:
        try:
            work(g)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(g,), name=f"traffic-{g}") for g in range(len(fleet.agents))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _day_start(now: float, day_seconds: float) -> float:
    """The start of the window a day runs in: the current one if at most ``LATE`` of it has gone,
    else the next. Monitoring windows are epoch-aligned, so always taking the next one waited up to
    a whole day before the first (0-16 s of the 16 s fast test; its 13 s runs took 27 s)."""
    start = math.floor(now / day_seconds) * day_seconds
    return start if now - start <= LATE * day_seconds else start + day_seconds


def _traffic(fleet: Fleet, day: int, df: Any, start: float, state: dict[str, Any],
             log: Callable[[str], None]) -> list[tuple[int, int, int, float]]:
    """The day's transactions, scored by the gateways at a steady rate over half of the day (window),
    from now (at most ``LATE`` into the window that begins at ``start``).

    Returns (row, label, version, probability) per scored transaction. On a machine too busy to
    score them all before ``CLOSE`` of the day, the rest are left out and the table says so."""
    records = df[FEATURES].to_dict("records")
    labels = df[LABEL].astype(int).tolist()
    n, k = len(records), len(fleet.agents)
    busy = 0.5 * fleet.day_seconds
    begin = max(start, time.time())
    scored: list[list[tuple[int, int, int, float]]] = [[] for _ in range(k)]   # per gateway

    closing = start + CLOSE * fleet.day_seconds  # what is not scored by then is left out, not spilled into the next day

    def gateway(g: int) -> None:
        agent, mine = fleet.agents[g], range(g, n, k)
        done = 0
        while done < len(mine) and time.time() < closing:
            due = min(len(mine), int(len(mine) * (time.time() - begin) / busy) + 1)
            for j in mine[done:due]:
                if time.time() >= closing:
                    break
                pred = agent.score(records[j], f"d{day}-{j:06d}")
                scored[g].append((j, labels[j], pred.version, pred.probability))
                done += 1
            time.sleep(0.01)
        agent.telemetry.flush_window()  # the day's sketch lands in the day's window

    watcher = threading.Event()

    def watch() -> None:  # the rollout of a retrained version advances during the day's traffic
        while not watcher.wait(0.5):
            _note_rollout(fleet, state, log)

    w = threading.Thread(target=watch, daemon=True)
    if state.get("rollout_id") is not None:
        w.start()
    try:
        _parallel(fleet, gateway)
    finally:
        watcher.set()
        if w.is_alive():
            w.join(5)
    if not any(scored):
        raise ExampleError(f"day {day}: the gateways scored nothing in the {fleet.day_seconds:g}s day; raise --day-seconds")
    return sorted(x for part in scored for x in part)


def _labels(fleet: Fleet, day: int, df: Any, rows: list[int]) -> None:
    """The day's fraud report, after its traffic: the issuer's back office, not the gateway, learns
    which payments were fraud, so it posts every transaction's label to the fleet server itself, as
    the ``outcome`` messages ``Agent.record_outcome`` would send (docs/protocol.md), filed under the
    gateway that scored the transaction, in batches of up to 5,000."""
    import uuid

    labels = df[LABEL].astype(int).tolist()
    k = len(fleet.agents)
    now = time.time()
    observed = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
    for g, agent in enumerate(fleet.agents):
        dev = agent.cfg.device_id
        msgs = [{"id": uuid.uuid4().hex, "kind": "outcome", "created": now,
                 "body": {"device_id": dev, "entity_id": f"d{day}-{j:06d}", "label": labels[j], "observed_at": observed}}
                for j in rows if j % k == g]
        for i in range(0, len(msgs), 5000):
            fleet.api.request("POST", f"/api/v1/devices/{dev}/telemetry", {"device_id": dev, "messages": msgs[i:i + 5000]})


def _note_rollout(fleet: Fleet, state: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    r = fleet.api.request("GET", f"/api/v1/rollouts/{state['rollout_id']}")
    key = (r["state"], r["step_index"], tuple(sorted(r["counts"].items())))
    if key != state.get("rollout_key"):
        state["rollout_key"] = key
        step = r["steps"][r["step_index"]]
        log(f"   rollout #{r['id']} v{r['version']}: {r['state']} at step {r['step_index'] + 1}/{len(r['steps'])} ({step:g} %), "
            f"counts {r['counts']}" + (f"; {r['reason']}" if r.get("reason") else ""))
    state["rollout"] = r
    return r


def run(out: Path, *, rows: int = 20_000, seed: int = 7, day_seconds: float = 18.0, devices: int = 3, days: int = 6,
        shifted: tuple[int, ...] = (5, 6), log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the example; returns the measured numbers (also written to ``out/result.json``)."""
    from sklearn.model_selection import train_test_split

    from compiler import compile as compile_model
    from edgefleet import keys

    wall0 = time.time()
    if (out / "fleet").exists():
        raise ExampleError(f"--out {out}: holds the fleet server of an earlier run ({out / 'fleet'}); give a new folder or delete it")
    out.mkdir(parents=True, exist_ok=True)
    priv, pub = keys.generate_keypair(out / "keys", overwrite=True)
    data = make_days(rows, seed, days=days, shifted=shifted)
    train, hold = train_test_split(data[1], test_size=0.3, random_state=42, stratify=data[1][LABEL])
    train.to_csv(out / "day1_train.csv", index=False)
    v1 = make_pipeline().fit(train[FEATURES], train[LABEL])
    r1 = compile_model(v1, hold.reset_index(drop=True), targets=["onnx"], name=MODEL, version=1, private_key=keys.load_private_key(priv),
                       label=LABEL, out_dir=out / "fraud-v1")
    assert r1.archive is not None
    ref = r1.manifest["reference"]["metrics"]
    log(f"v1: RandomForest (20 trees, depth 20) on {len(train)} day-1 rows ({int(train[LABEL].sum())} frauds); ONNX, parity "
        f"max |dp| {r1.manifest['parity'][0]['max_abs_diff']:.1e}; reference AUROC {ref['auroc']:.3f}, AP {ref['average_precision']:.3f} "
        f"on {len(hold)} held-out rows")
    if ref["auroc"] <= THRESHOLD:
        raise ExampleError(f"v1's reference AUROC {ref['auroc']:.3f} is not above {THRESHOLD}: the alert rule cannot be expressed")

    fleet = Fleet(out, pub, devices, day_seconds)
    result: dict[str, Any] = {"reference": ref, "days": [], "alerts": [], "retrain": None, "rollout": None}
    try:
        api = fleet.api
        api.request("POST", "/api/v1/models", raw=r1.archive.read_bytes())
        command = ["edgefleet", "retrain", "--server", "{server}", "--model", "{model}", "--alert", "{alert}",
                   "--trainer", "examples.fraud.model:train_rf", "--reference-data", str((out / "day1_train.csv").resolve()),
                   "--key", str(Path(priv).resolve()), "--window-seconds", str(2 * day_seconds), "--margin", "0.01", "--quiet"]
        # one bad day fires, one good day clears; each pass re-reads only the last two days (the machine is small)
        policy = {"window_seconds": day_seconds, "lookback_windows": 2, "fire_after": 1, "clear_after": 1,
                  "min_count": 200, "min_labeled": 200, "max_auroc_drop": round(ref["auroc"] - THRESHOLD, 6), "max_ap_drop": 1.0,
                  "retrain": {"command": command, "on": ["performance"], "cooldown_seconds": 3600, "timeout_seconds": 240,
                              "cwd": str(ROOT)}}
        api.request("PUT", f"/api/v1/models/{MODEL}/policy", policy)
        fleet.enroll()
        r = api.request("POST", "/api/v1/rollouts", {"model": MODEL, "version": 1, "steps": [100]})
        _wait(lambda: api.request("GET", f"/api/v1/rollouts/{r['id']}")["state"] == "completed", 60, "v1 on every gateway")
        log(f"fleet server {fleet.server.url}; v1 on {devices} gateways; a day is {day_seconds:g}s; alert and retrain when a "
            f"day's AUROC < {THRESHOLD} (policy max_auroc_drop {policy['max_auroc_drop']:.3f} below the reference)")
        log("")
        header = f"{'day':>3}  {'rows':>6}  {'fraud':>5}  {'model':>5}  {'AUROC':>6}  {'AP':>6}  {'0/1 AUROC':>9}  {'max PSI (field)':>17}  {'score PSI':>9}  note"
        log(header)
        state: dict[str, Any] = {}
        for day in range(1, days + 1):
            df = data[day]
            start = _day_start(time.time(), day_seconds)
            time.sleep(max(0.0, start - time.time() + 0.01))
            scored = _traffic(fleet, day, df, start, state, log)
            t_traffic = time.time() - start
            _labels(fleet, day, df, [j for j, _, _, _ in scored])
            _wait(fleet.drained, 60, f"day {day}'s telemetry at the server", 0.1)
            t_drained = time.time() - start
            # the daily job, run as of the day's end: every prediction, sketch and label of the day is
            # at the server already, so the window is complete even if the clock has not reached its end
            events = api.request("POST", "/api/v1/monitor/run", {"now": max(time.time(), start + day_seconds)})["events"]
            versions = sorted({v for _, _, v, _ in scored})
            m = _day_metrics(fleet, start, versions)
            hard = _auroc_hard([y for _, y, _, _ in scored], [p for _, _, _, p in scored])
            frauds = sum(y for _, y, _, _ in scored)
            fired = [e["alert"] for e in events if e["event"] == "fired" and e["alert"]["cohort"] == "all"]
            perf = [a for a in fired if a["kind"] == "performance"]
            main = m["by_version"][versions[-1]] if len(versions) == 1 else None
            note = ("ALERT" if perf else "") if main else "mixed: " + ", ".join(
                f"v{v} AUROC {_fmt(x['auroc'])} AP {_fmt(x['average_precision'])} ({x['n']} rows)" for v, x in m["by_version"].items())
            shown = main or m["by_version"][versions[-1]]
            mp = m.get("max_psi") or {}
            if len(scored) < len(df):
                note = (note + "; " if note else "") + f"busy machine: {len(df) - len(scored)} of {len(df)} transactions not scored"
            log(f"{day:>3}  {len(scored):>6}  {frauds:>5}  {'/'.join(f'v{v}' for v in versions):>5}  {_fmt(shown['auroc']):>6}  "
                f"{_fmt(shown['average_precision']):>6}  {_fmt(hard):>9}  {_fmt(mp.get('psi')):>6} ({mp.get('field', '-'):>6})  "
                f"{_fmt(m.get('score_psi')):>9}  {note}")
            result["days"].append({"day": day, "rows": len(df), "scored": len(scored), "frauds": frauds, "versions": versions,
                                   "hard_auroc": hard, **m, "window_start": start,
                                   "seconds": {"traffic_and_labels": round(t_traffic, 2), "drained": round(t_drained, 2)}})
            drift_alerts = sorted({a["subject"] for a in fired if a["kind"] == "drift"})
            if drift_alerts:
                log(f"   drift alert(s) on v1's inputs: {', '.join(drift_alerts)} (noise-corrected PSI above {0.1} and significant)")
            for a in perf:
                d = a["details"]
                what = {"auroc": "AUROC", "estimated_auroc": "estimated AUROC (CBPE)"}.get(a["subject"], a["subject"])
                log(f"   ALERT #{a['id']} performance v{a['version']}: {what} {_fmt(d.get('value'))} < {THRESHOLD} "
                    f"(reference {_fmt(d.get('reference'))}, max drop {_fmt(d.get('max_drop'))})")
                result["alerts"].append(a)
            if perf and result["retrain"] is None:
                result["retrain"] = _retrain(fleet, log, timeout=240)
                state["rollout_id"] = result["retrain"].get("rollout_id")
        if state.get("rollout_id") is not None:
            final = _wait(lambda: _note_rollout(fleet, state, log)["state"] not in ("running", "paused") and state["rollout"],
                          30, "the v2 rollout to finish", 0.5)
            result["rollout"] = final
            log(f"rollout #{final['id']} of v{final['version']}: {final['state'].upper()}, {final['counts']}"
                + (f" ({final['reason']})" if final.get("reason") else ""))
        # the companion's REST shape, served by the fleet server with the device runtime's scorer
        last = data[days]
        row = last[last[LABEL] == 1].iloc[0] if int(last[LABEL].sum()) else last.iloc[0]
        feature = ",".join(f"{float(row[c]):.6g}" for c in FEATURES)
        answer = api.request("POST", f"/api/v1/models/{MODEL}/cdsw", {"feature": feature})
        result["cdsw"] = {"class": int(row[LABEL]), "answer": answer}
        log(f"CDSW model API: POST /api/v1/models/{MODEL}/cdsw {{\"feature\": \"{feature[:40]}...\"}} (a day-{days} transaction, "
            f"Class {int(row[LABEL])}) -> {json.dumps(answer)}")
        result["devices"] = {a.cfg.device_id: (a.scorer.version if a.scorer else None) for a in fleet.agents}
        log(f"gateway versions: {result['devices']}")
    finally:
        fleet.stop()
    result["seconds"] = round(time.time() - wall0, 1)
    log(f"done in {result['seconds']}s; server data, keys, bundles and retrain logs in {out}")
    (out / "result.json").write_text(json.dumps(result, indent=2, default=str))
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m examples.fraud.run", description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--out", required=True, type=Path, help="work folder: keys, bundles, server data, retrain logs, result.json")
    ap.add_argument("--rows", type=int, default=20_000, help="transactions per day (default 20000: about 34 frauds a day)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--day-seconds", type=float, default=18.0, help="seconds per day, one monitoring window (default 18)")
    ap.add_argument("--devices", type=int, default=3, help="payment gateways running the device agent (default 3)")
    args = ap.parse_args(argv)
    for name, value, low in (("--rows", args.rows, 1000), ("--devices", args.devices, 1), ("--day-seconds", args.day_seconds, 1.0)):
        if value < low:
            ap.error(f"{name}: {value} is below {low:g}")
    try:
        run(args.out, rows=args.rows, seed=args.seed, day_seconds=args.day_seconds, devices=args.devices)
    except (ExampleError, EdgefleetError) as exc:
        print(f"examples.fraud.run: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
