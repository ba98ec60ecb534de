"""The fleet dashboard (/dashboard) in real headless Chromium, on a real server with real data.

The server is waitress + SQLite with two signed churn versions, five enrolled devices in two
groups, a completed v1 rollout and a v2 rollout still in progress (one device never installs).
Four devices send what the agent sends, over HTTP with their own tokens: predictions scored by
the real Scorer, the device's own Sketch per daily window, and delayed outcomes. The "online"
group sees a 30% price rise from window 3 on, and the monitor runs once per closed window
(POST /api/v1/monitor/run), so drift alerts fire, and some clear, with hysteresis.

One browser session (tests/web/dashboard.mjs) checks the token gate, reads every plot's Chart.js
objects and canvas, the alert list and the empty states of a server without telemetry, and
saves a screenshot with the test output (EDGEFLEET_UPDATE_DOCS=1 also copies it to docs/dashboard.png).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from compiler.bundle import bundle_files
from edgefleet.bundle_format import canonical_json, open_bundle, pack, verify
from edgefleet_cli.samples.telco_churn import make_telco_churn
from fleet_server.core import ServerConfig
from fleet_server.serve import FleetServer
from runtimes.python import Scorer
from tests.fleet_server.conftest import Api, enroll, wait_for
from tests.fleet_server.monitoring.conftest import DeviceSim
from tests.runtimes.conftest import lr_result  # noqa: F401 - the compiled churn model
from tests.web.conftest import CHROMIUM, ROOT, require_browser_tools

pytestmark = pytest.mark.timeout(180)
DRIVER = Path(__file__).with_name("dashboard.mjs")
TIMEOUT = 120.0  # the browser session; it takes ~10 s here
DAY = 86_400.0
WINDOWS = 8         # daily windows ending at today's midnight (UTC), so the default report range holds them
SHIFT_FROM = 3      # the "online" group's prices rise by 30% from this window on
SWITCH_AT = 6       # devices that installed v2 score with it from this window on
ROWS = 250          # scored records per device and window
DEVICES = [("store-1", "stores", []), ("store-2", "stores", ["pilot"]), ("web-1", "online", []), ("web-2", "online", ["pilot"]),
           ("web-3", "online", [])]
SILENT = "web-3"    # enrolled, never installs v2 and sends nothing: the rollout stays in progress


class HttpDevice(DeviceSim):
    """DeviceSim whose telemetry goes through the device API with the device's own token."""

    def __init__(self, api: Api, cred: dict[str, Any], scorer: Scorer, seed: int) -> None:
        super().__init__(api.server.fleet, scorer, cred["device_id"], sample_rate=0.5, seed=seed)
        self.api, self.token = api, cred["token"]

    def send(self, msgs: list[dict[str, Any]]) -> None:
        for i in range(0, len(msgs), 2000):
            code, body, _ = self.api("POST", f"/api/v1/devices/{self.device_id}/telemetry",
                                     {"device_id": self.device_id, "messages": msgs[i:i + 2000]}, token=self.token)
            assert code == 200 and body["accepted"] == len(msgs[i:i + 2000]), body


def _bundle(lr: Any, key: Any, version: int) -> bytes:
    """A correctly signed archive of the compiled churn model at ``version`` (as make_bundle)."""
    manifest = json.loads(canonical_json(lr.manifest))
    manifest["version"] = version
    files = bundle_files(manifest, [], key)
    files.update({k: v for k, v in lr.files.items() if k.startswith("artifacts/")})
    return pack(files)


def _status(api: Api, cred: dict[str, Any], version: int) -> None:
    body = {"capabilities": {"backends": ["onnx"], "formats": ["onnx"]}, "health": "ok", "active_model": "churn", "active_version": version}
    code, err, _ = api("POST", f"/api/v1/devices/{cred['device_id']}/status", body, token=cred["token"])
    assert code == 204, err


def _roll_out_v2(api: Api, creds: dict[str, dict[str, Any]]) -> dict[str, int]:
    """v1 everywhere (a completed rollout), then v2 to the online group in two steps; devices
    other than SILENT install what they are assigned. Returns each device's final version."""
    for cred in creds.values():
        _status(api, cred, 1)
    code, r1, _ = api("POST", "/api/v1/rollouts", {"model": "churn", "version": 1, "steps": [100]})
    assert code == 201 and r1["state"] == "completed", r1
    code, r2, _ = api("POST", "/api/v1/rollouts", {"model": "churn", "version": 2, "selector": {"groups": ["online"]}, "steps": [50, 100]})
    assert code == 201, r2
    versions = {d: 1 for d in creds}

    def settled() -> bool:
        for dev, cred in creds.items():
            if dev == SILENT or versions[dev] == 2 or not dev.startswith("web-"):
                continue
            code, env, _ = api("GET", f"/api/v1/devices/{dev}/assignment", token=cred["token"])
            if code == 200 and env["assignment"]["version"] == 2:
                _status(api, cred, 2)
                versions[dev] = 2
        st = api("GET", f"/api/v1/rollouts/{r2['id']}")[1]
        return st["counts"].get("assigned") == 1 and st["counts"].get("installed", 0) == sum(v == 2 for v in versions.values())

    wait_for(settled, timeout=20, what="the v2 rollout to settle with one silent device", every=0.2)
    return versions


def _populate(server: FleetServer, lr: Any, key: Any, tmp: Path) -> dict[str, Any]:
    api = Api(server)
    for v in (1, 2):
        code, body, _ = api("POST", "/api/v1/models", raw=_bundle(lr, key, v))
        assert code == 201, body
    code, body, _ = api("PUT", "/api/v1/models/churn/policy", {"fire_after": 2, "clear_after": 2, "window_seconds": DAY,
                                                                 "lookback_windows": 14, "min_labeled": 50})
    assert code == 200, body
    creds = {dev: enroll(api, dev, group, tags) for dev, group, tags in DEVICES}
    versions = _roll_out_v2(api, creds)
    scorers = {}
    for v in (1, 2):  # the devices score with what they downloaded: the registered archives
        (tmp / f"churn-v{v}.tar").write_bytes(_bundle(lr, key, v))
        b = open_bundle(tmp / f"churn-v{v}.tar")
        scorers[v] = Scorer(verify(b, key.public_key()), b.files)  # as a device does: verified first
    sims = [HttpDevice(api, creds[d], scorers[1], seed=i) for i, (d, _, _) in enumerate(DEVICES) if d != SILENT]
    base = math.floor(time.time() / DAY) * DAY - WINDOWS * DAY
    events: list[dict[str, Any]] = []
    for w in range(WINDOWS):
        t0 = base + w * DAY
        for i, sim in enumerate(sims):
            online = sim.device_id.startswith("web-")
            sim.scorer = scorers[versions[sim.device_id] if w >= SWITCH_AT else 1]
            frame = make_telco_churn(ROWS, seed=1000 + 10 * w + i, price_shift=0.3 if online and w >= SHIFT_FROM else 0.0)
            before = len(sim.scored)
            sim.run_window(frame, t0, t0 + DAY, prefix=f"w{w}")
            # labels arrive a few hours after each prediction, inside the same window
            sim.send([sim.outcome_message(s["entity_id"], s["label"], min(s["created"] + 4 * 3600.0, t0 + DAY - 120.0))
                      for s in sim.scored[before:]])
        code, body, _ = api("POST", "/api/v1/monitor/run", {"now": t0 + DAY + 1.0})
        assert code == 200, body
        events += body["events"]
    alerts = api("GET", "/api/v1/alerts")[1]["alerts"]
    return {"api": api, "versions": versions, "events": events, "alerts": alerts, "base": base}


@pytest.fixture(scope="module")
def session(lr_result: Any, keypair: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:  # noqa: F811
    node = require_browser_tools()
    out = tmp_path_factory.mktemp("dashboard")
    t_start = time.monotonic()
    servers = []
    proc = None
    try:
        for name in ("fleet", "empty"):
            cfg = ServerConfig(data_dir=tmp_path_factory.mktemp(name), trust_keys=[keypair["public_path"]], embedded_broker=False,
                               port=0, reconcile_seconds=0.2)
            servers.append(FleetServer(cfg).start())
        full, empty = servers
        data = _populate(full, lr_result, keypair["private"], out)
        empty_api = Api(empty)
        assert empty_api("POST", "/api/v1/models", raw=_bundle(lr_result, keypair["private"], 1))[0] == 201
        populated = time.monotonic() - t_start
        plan = {"url": full.url + "/dashboard/", "token": full.fleet.secrets.admin_token, "empty_url": empty.url + "/dashboard/",
                "empty_token": empty.fleet.secrets.admin_token, "out": str(out), "chromium": CHROMIUM}
        (out / "plan.json").write_text(json.dumps(plan))
        t0 = time.monotonic()
        proc = subprocess.run([node, str(DRIVER), str(out / "plan.json")], cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
        results: dict[str, Any] = {}
        for line in proc.stdout.splitlines():
            if line.startswith("@@result "):
                r = json.loads(line[9:])
                results[r["scenario"]] = r
            elif line.startswith("@@console "):
                results["console"] = json.loads(line[10:])
        if "full" not in results:
            pytest.fail(f"the dashboard driver produced no results (exit {proc.returncode}): {proc.stderr[-3000:]}")
        results.update(data, out=out, origins=[s.url for s in servers], populate_seconds=populated, browser_seconds=time.monotonic() - t0,
                       stderr=proc.stderr)
        return results
    finally:
        for s in servers:
            s.stop()


def _ok(session: dict[str, Any], name: str) -> dict[str, Any]:
    r = session.get(name)
    assert r is not None, f"scenario {name} did not run: {session.get('stderr', '')[-2000:]}"
    assert r["ok"], f"{name} failed in the browser: {r.get('error')}\nconsole: {r.get('console')}"
    return r


def _visible(chart: dict[str, Any]) -> list[dict[str, Any]]:
    return [d for d in chart["datasets"] if not d["hidden"]]


def test_every_plot_renders_the_servers_data(session: dict[str, Any]) -> None:
    r = _ok(session, "full")
    assert set(r["charts"]) == {"versions", "rollouts", "drift", "auroc", "ap", "alerts"}
    assert not any(c["empty"] for c in r["cards"].values()), r["cards"]
    for name, chart in r["charts"].items():
        assert chart["labels"] > 0 and sum(d["points"] for d in _visible(chart)) > 0, (name, chart)
        assert all(d["drawn"] == chart["labels"] for d in chart["datasets"]), f"{name}: Chart.js laid out every point"
        assert chart["ink_fraction"] > 0.01, f"{name}: the canvas is blank ({chart['ink_fraction']:.4f})"

    versions = r["charts"]["versions"]
    assert {d["label"] for d in versions["datasets"]} == {"churn v1", "churn v2"}
    assert versions["labels"] == 3, "group=online, group=stores and tag=pilot as cohorts"
    assert r["kpis"]["devices"] == "5" and r["kpis"]["model"] == "churn v2"

    rollouts = {d["label"]: d for d in r["charts"]["rollouts"]["datasets"]}
    assert rollouts["installed"]["nonzero"] == 2 and rollouts["assigned"]["nonzero"] == 1, "v1 done, v2 still waiting for one device"
    assert any("running" in row for row in r["rollout_rows"]) and any("superseded" in row for row in r["rollout_rows"])

    drift = r["charts"]["drift"]
    assert drift["labels"] >= SWITCH_AT, "one point per window of the chosen version"
    lines = {d["label"]: d for d in drift["datasets"]}
    assert lines["MonthlyCharges"]["points"] >= SWITCH_AT and not lines["MonthlyCharges"]["hidden"], "the drifted feature leads the plot"
    assert any(label.startswith("threshold") for label in lines) and len(_visible(drift)) >= 4
    assert r["selection"]["cohort"] == "group=online" and r["selection"]["version"] == "1", "opens on the cohort of the firing alert"
    assert "group=stores" in r["selection"]["cohorts"] and "all" in r["selection"]["cohorts"]
    assert r["other_cohort"]["labels"] >= SWITCH_AT and sum(d["points"] for d in r["other_cohort"]["datasets"]) > 0

    for metric in ("auroc", "ap"):
        chart = {d["label"].split(" ")[0]: d for d in r["charts"][metric]["datasets"]}
        assert chart["realized"]["points"] >= SWITCH_AT and chart["estimated"]["points"] >= SWITCH_AT, (metric, chart)
        assert chart["reference"]["points"] > 0


def test_alert_list_shows_the_firing_alert_with_its_state(session: dict[str, Any]) -> None:
    r = _ok(session, "full")
    firing = [a for a in session["alerts"] if a["state"] == "firing"]
    assert any(a["cohort"] == "group=online" and a["subject"] == "MonthlyCharges" and a["kind"] == "drift" for a in firing), session["alerts"]
    shown = {a["id"]: a for a in r["alerts"]}
    assert set(shown) == {a["id"] for a in session["alerts"]}, "every alert of the model is listed"
    for a in session["alerts"]:
        assert shown[a["id"]]["state"] == a["state"] and shown[a["id"]]["badge"] == a["state"]
    online = next(a for a in firing if a["cohort"] == "group=online" and a["subject"] == "MonthlyCharges")
    assert "group=online" in shown[online["id"]]["text"] and "PSI" in shown[online["id"]]["text"]
    assert any(a["state"] == "cleared" for a in session["alerts"]), "hysteresis cleared at least one alert"
    assert r["kpis"]["alerts"] == str(len(firing))
    assert r["drift_pill"].startswith("Latest window:")


def test_token_gate_refuses_a_wrong_token_and_keeps_the_right_one(session: dict[str, Any]) -> None:
    r = _ok(session, "gate")
    assert r["prompt"] and "refused the token" in r["refused"] and r["stored"]
    assert _ok(session, "full")["hash"] == "", "a token passed in the fragment leaves the address bar at once"


def test_without_telemetry_every_card_shows_an_empty_state(session: dict[str, Any]) -> None:
    r = _ok(session, "empty")
    assert r["charts"] == {}, "no chart is drawn from nothing"
    texts = {name: c["empty_text"] for name, c in r["cards"].items()}
    assert all(c["empty"] for c in r["cards"].values()), texts
    assert texts["versions"].startswith("No devices enrolled yet") and texts["rollouts"].startswith("No rollouts yet")
    assert texts["drift"].startswith("No drift windows yet") and texts["auroc"].startswith("No predictions")
    assert texts["alerts"].startswith("No alerts")


def test_page_is_same_origin_and_quiet(session: dict[str, Any]) -> None:
    console = session["console"]
    assert set(console["origins"]) <= set(session["origins"]), f"requests left the server: {console['origins']}"
    noisy = [m for m in console["console"] if "401" not in m and "403" not in m]  # the gate scenario's wrong token
    assert noisy == [], noisy


def test_dashboard_screenshot_is_saved(session: dict[str, Any]) -> None:
    r = _ok(session, "full")
    png = Path(r["screenshot"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 50_000
    if os.environ.get("EDGEFLEET_UPDATE_DOCS"):  # refresh the README's picture on request only
        shutil.copyfile(png, ROOT / "docs" / "dashboard.png")
    took = ", ".join(f"{k} {session[k]['seconds']:.1f}s" for k in ("gate", "full", "empty") if k in session)
    print(f"dashboard screenshot: {png} ; data {session['populate_seconds']:.1f}s, "
          f"browser {session['browser_seconds']:.1f}s ({took}), page ready in {r['load_ms']} ms")
