"""The monitor: from stored telemetry to alerts, published on MQTT and POSTed to webhooks.

``run_monitor(fleet, now)`` is one pass; the ``Monitor`` thread (started by ``FleetServer``)
calls it every ``ServerConfig.monitor_seconds``, and ``POST /api/v1/monitor/run`` runs it now.

One pass, per model (its policy from ``monitor_policies``, defaults when none):

1. the complete windows of the lookback, ``[end - lookback_windows * W, end)`` with
   ``end = floor(now / W) * W``: a window still open is never judged;
2. for every version with telemetry there, ``aggregate.drift_report`` and
   ``aggregate.performance_report``;
3. hysteresis (``stats.AlertState``: fire after ``fire_after`` bad windows in a row, clear after
   ``clear_after`` good ones) replayed over those windows for every (cohort, subject):
   * ``drift``, one subject per input field and ``<score>``: the field's verdict in the
     window's primary comparison (``vs_reference``; ``vs_baseline`` for customer segments);
     ``insufficient_data`` changes nothing;
   * ``performance``, subjects ``auroc`` and ``average_precision`` (realized, windows with at
     least ``min_labeled`` labels) and ``estimated_auroc`` / ``estimated_average_precision``
     (CBPE, windows with at least ``min_count`` predictions): bad when the manifest's
     reference value minus the window's exceeds ``max_auroc_drop`` / ``max_ap_drop``. Only
     the fleet and device cohorts: a customer segment's AUROC differs from the population's
     by construction, so it is reported, not alerted on;
   * ``fairness`` (when the policy names ``fairness_fields``), cohort ``<field>=<group>``,
     subjects the policy's ``fairness_alert_metrics``: bad when the disparity's bootstrap
     interval lies wholly beyond the tolerance, good when wholly inside it; ``inconclusive``
     and ``insufficient_data`` change nothing (``fairness.alert_inputs``);
4. the replayed state is compared with the stored alerts: an alert that should fire and has no
   ``firing`` row is created (event ``fired``); a ``firing`` row whose subject was judged and
   is no longer active is cleared (event ``cleared``). So a pass is idempotent: running it again
   on the same data emits nothing. A subject with no verdict in the lookback (a cohort that
   went quiet, a version no device runs any more) keeps its alert as it is;
5. after the commit, each event is published (``edgefleet/v1/alerts/<model>``, not retained)
   and POSTed to the policy's webhook (timeout 5 s; failures are counted as
   ``alert_webhook_failed``, never raised).

Passes in one process are serialized. Two server processes on one database could both create
the same alert; run the monitor in one of them.
"""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.error
import urllib.request
import weakref
from typing import Any, Iterable

from sqlalchemy import select

from edgefleet.protocol import alert_topic
from fleet_server.core import Fleet
from fleet_server.db import ModelVersion, TelemetryRecord, utcnow
from fleet_server.failures import LoggedError
from fleet_server.monitoring import aggregate, fairness, stats
from fleet_server.monitoring import retrain_trigger as retrain
from fleet_server.monitoring.policy import Policy, load
from fleet_server.monitoring.tables import Alert

SCORE = "<score>"
PERF_SUBJECTS = (  # subject, where in a performance window, reference metric, policy limit
    ("auroc", ("realized", "auroc"), "auroc", "max_auroc_drop"),
    ("average_precision", ("realized", "average_precision"), "average_precision", "max_ap_drop"),
    ("estimated_auroc", ("estimated", "auroc"), "auroc", "max_auroc_drop"),
    ("estimated_average_precision", ("estimated", "average_precision"), "average_precision", "max_ap_drop"),
)
WEBHOOK_TIMEOUT = 5.0

_run_lock = threading.Lock()
_snapshots: "weakref.WeakKeyDictionary[Fleet, dict[str, Any]]" = weakref.WeakKeyDictionary()

Key = tuple[str, str, str]  # cohort, kind, subject


class _Replay:
    """Hysteresis per (cohort, kind, subject) over a report's windows, in time order."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.states: dict[Key, stats.AlertState] = {}
        self.judged: set[Key] = set()
        self.details: dict[Key, dict[str, Any]] = {}

    def feed(self, key: Key, bad: bool | None, details: dict[str, Any]) -> None:
        state = self.states.setdefault(key, stats.AlertState(self.policy.fire_after, self.policy.clear_after))
        if bad is None:
            return
        self.judged.add(key)
        was = state.active
        state.update(bad)
        if state.active and not was:
            details = {**details, "fired_in_window": details.get("window_start")}
        elif state.active:
            details = {**details, "fired_in_window": self.details.get(key, {}).get("fired_in_window")}
        self.details[key] = details

    def active(self) -> dict[Key, dict[str, Any]]:
        return {k: self.details[k] for k, s in self.states.items() if s.active}


def _replay(drift: dict[str, Any], perf: dict[str, Any], policy: Policy) -> _Replay:
    rep = _Replay(policy)
    for entry in drift["windows"]:
        primary = entry.get(entry["primary"])
        if primary is None:
            continue
        subjects = [(f, r) for f, r in primary["fields"].items()] + [(SCORE, primary["score"])]
        for subject, res in subjects:
            verdict = res["verdict"]
            bad = None if verdict == "insufficient_data" else verdict == "drift"
            rep.feed((entry["cohort"], "drift", subject), bad, {
                "window_start": entry["window_start"], "comparison": entry["primary"], "n": entry["n"],
                "psi": res.get("psi"), "psi_excess": res.get("psi_excess"), "pvalue": res.get("pvalue"),
                "psi_threshold": policy.psi_threshold,
            })
    reference = perf.get("reference") or {}
    for entry in perf["windows"]:
        if entry["kind"] == "segment":
            continue
        for subject, (part, metric), ref_name, limit_name in PERF_SUBJECTS:
            ref, value = reference.get(ref_name), (entry.get(part) or {}).get(metric)
            enough = (entry["realized"].get("n_labeled", 0) >= policy.min_labeled if part == "realized"
                      else entry["n_predictions"] >= policy.min_count)
            limit = getattr(policy, limit_name)
            bad = None if ref is None or value is None or not enough else (ref - value) > limit
            rep.feed((entry["cohort"], "performance", subject), bad, {
                "window_start": entry["window_start"], "value": value, "reference": ref, "max_drop": limit,
                "n_predictions": entry["n_predictions"], "n_labeled": entry["realized"].get("n_labeled", 0),
            })
    return rep


def _latest_metrics(drift: dict[str, Any], perf: dict[str, Any]) -> dict[str, Any]:
    """Newest value per cohort (and feature): what /metrics exports."""
    psi: dict[tuple[str, str], float] = {}
    for entry in drift["windows"]:  # time order: later windows overwrite
        primary = entry.get(entry["primary"])
        if primary is None:
            continue
        for f, r in list(primary["fields"].items()) + [(SCORE, primary["score"])]:
            if r.get("psi") is not None:
                psi[(entry["cohort"], f)] = r["psi"]
    perf_out: dict[tuple[str, str, str], float] = {}
    for entry in perf["windows"]:
        for kind in ("realized", "estimated"):
            for metric in ("auroc", "average_precision"):
                value = (entry.get(kind) or {}).get(metric)
                if value is not None:
                    perf_out[(entry["cohort"], kind, metric)] = value
    return {"psi": psi, "performance": perf_out}


def _model_versions(session: Any, start: float, end: float) -> list[tuple[str, int]]:
    T = TelemetryRecord
    q = (select(T.model, T.model_version).distinct().where(T.kind.in_(["sketch", "prediction"]), T.created >= start, T.created < end,
                                                           T.model.is_not(None), T.model_version.is_not(None)))
    return sorted((m, int(v)) for m, v in session.execute(q))


def evaluate(fleet: Fleet, now: float | None = None) -> dict[str, Any]:
    """Reports and the replayed alert state of every (model, version) with telemetry in its lookback."""
    now = time.time() if now is None else float(now)
    out: dict[str, Any] = {"now": now, "versions": []}
    with fleet.session() as s:
        cohorts = aggregate.device_cohorts(s)
        names = sorted(set(s.scalars(select(ModelVersion.name))))
        for name in names:
            policy = load(s, name)
            W = policy.window_seconds
            end = math.floor(now / W) * W
            start = end - policy.lookback_windows * W
            wanted = {v for m, v in _model_versions(s, start, end) if m == name}
            rows = s.scalars(select(ModelVersion).where(ModelVersion.name == name, ModelVersion.version.in_(wanted))).all()
            for mv in sorted(rows, key=lambda r: r.version):
                cfg = policy.monitor_config()
                drift = aggregate.drift_report(s, mv.manifest, cfg, start=start, end=end, cohorts_of_device=cohorts)
                joined = aggregate.join_outcomes(s, mv.manifest, start=start, end=end)
                perf = aggregate.performance_report(s, mv.manifest, cfg, start=start, end=end, cohorts_of_device=cohorts, joined=joined)
                rep = _replay(drift, perf, policy)
                if policy.fairness_fields:
                    fair = fairness.fairness_report(s, mv.manifest, policy, start=start, end=end, joined=joined)
                    for cohort, metric, bad, details in fairness.alert_inputs(fair):
                        rep.feed((cohort, "fairness", metric), bad, details)
                out["versions"].append({
                    "model": name, "version": mv.version, "policy": policy, "start": start, "end": end,
                    "active": rep.active(), "judged": rep.judged, "metrics": _latest_metrics(drift, perf),
                })
    return out


def describe(a: Alert) -> dict[str, Any]:
    return {
        "id": a.id, "model": a.model, "version": a.version, "cohort": a.cohort, "kind": a.kind, "subject": a.subject,
        "state": a.state, "details": a.details, "created_at": a.created_at.isoformat() + "Z",
        "cleared_at": a.cleared_at.isoformat() + "Z" if a.cleared_at else None,
    }


def _apply(fleet: Fleet, evaluation: dict[str, Any]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    with fleet.session() as s:
        firing = {(a.model, a.version, a.cohort, a.kind, a.subject): a for a in s.scalars(select(Alert).where(Alert.state == "firing"))}
        new: list[Alert] = []
        for v in evaluation["versions"]:
            model, version = v["model"], v["version"]
            for (cohort, kind, subject), details in sorted(v["active"].items()):
                if (model, version, cohort, kind, subject) not in firing:
                    a = Alert(model=model, version=version, cohort=cohort, kind=kind, subject=subject, state="firing",
                              details=details, created_at=utcnow())
                    s.add(a)
                    new.append(a)
            for (m, ver, cohort, kind, subject), a in firing.items():
                key = (cohort, kind, subject)
                if (m, ver) == (model, version) and key in v["judged"] and key not in v["active"]:
                    a.state, a.cleared_at = "cleared", utcnow()
                    a.details = {**a.details, "cleared_after_windows": v["policy"].clear_after}
                    events.append({"event": "cleared", "alert": a})
        s.flush()
        events = [{"event": "fired", "alert": a} for a in new] + events
        out = [{"event": e["event"], "alert": describe(e["alert"])} for e in events]
        for e in out:
            fleet.bump(s, f"alerts_{e['event']}")
    return out


def _post(url: str, payload: bytes) -> str | None:
    req = urllib.request.Request(url, data=payload, method="POST", headers={"Content-Type": "application/json",
                                                                             "User-Agent": "edgefleet-monitor"})
    try:
        with urllib.request.urlopen(req, timeout=WEBHOOK_TIMEOUT) as r:
            return None if 200 <= r.status < 300 else f"HTTP {r.status}"
    except (urllib.error.URLError, OSError, ValueError) as exc:  # HTTPError is a URLError
        return f"{type(exc).__name__}: {exc}"


def _deliver(fleet: Fleet, events: Iterable[dict[str, Any]], webhooks: dict[str, str | None]) -> dict[str, Any]:
    sent = failed = 0
    last_error = None
    for e in events:
        model = e["alert"]["model"]
        payload = json.dumps(e, sort_keys=True).encode()
        fleet.publish(alert_topic(model), payload, False)
        url = webhooks.get(model)
        if url:
            err = _post(url, payload)
            if err is None:
                sent += 1
            else:
                failed, last_error = failed + 1, f"{url}: {err}"
    if sent or failed:
        with fleet.session() as s:
            if sent:
                fleet.bump(s, "alert_webhook_sent", sent)
            if failed:
                fleet.bump(s, "alert_webhook_failed", failed)
    return {"webhook_sent": sent, "webhook_failed": failed, "webhook_last_error": last_error}


def run_monitor(fleet: Fleet, now: float | None = None) -> list[dict[str, Any]]:
    """One monitor pass (see the module docstring); returns the new ``fired``/``cleared`` events."""
    with _run_lock:
        evaluation = evaluate(fleet, now)
        events = _apply(fleet, evaluation)
        webhooks = {v["model"]: v["policy"].webhook for v in evaluation["versions"]}
        delivery = _deliver(fleet, events, webhooks)
        retrain.on_alerts(fleet, events, {v["model"]: v["policy"] for v in evaluation["versions"]})  # spawns, never waits
        _snapshots[fleet] = {"now": evaluation["now"], "ran_at": time.time(), "events": len(events), **delivery,
                             "metrics": {(v["model"], v["version"]): v["metrics"] for v in evaluation["versions"]}}
    return events


def snapshot(fleet: Fleet) -> dict[str, Any]:
    """The newest pass's per-version metrics; evaluated now (without alerting) if none ran yet."""
    snap = _snapshots.get(fleet)
    if snap is None:
        evaluation = evaluate(fleet)
        snap = {"now": evaluation["now"], "ran_at": None, "events": 0,
                "metrics": {(v["model"], v["version"]): v["metrics"] for v in evaluation["versions"]}}
    return snap


class Monitor(threading.Thread):
    """Runs ``run_monitor`` every ``period`` seconds, the first time one period after start."""

    part = "monitor"
    last_error = LoggedError()  # logged once per distinct failure, and on recovery

    def __init__(self, fleet: Fleet, period: float) -> None:
        super().__init__(name="monitor", daemon=True)
        self.fleet, self.period = fleet, period
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(self.period):
            try:
                run_monitor(self.fleet)
                self.last_error = None
            except Exception as exc:  # noqa: BLE001 - keep monitoring; the error is logged once and shown by /readyz
                self.last_error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}"
