"""The demo and the dashboard at phone width, with nothing published, and on a fresh server, in real Chromium.

One browser session (tests/web/pages.mjs) against three real fleet servers (waitress + SQLite):

* ``demo``: two signed versions of the compiled churn bundle (onnx + tfjs). At 360, 375 (mobile
  emulation) and 390 px the page is no wider than the viewport; at 1,360 px the model picker lists
  both versions, opens on the newest and switches to the other one;
* ``empty``: nothing published, no device. The demo says which command publishes a model and its
  badge leaves "Loading…"; the dashboard's empty states name CLI commands, not API routes;
* ``fresh``: one published model, one device that ran it for an hour (its predictions, sketch and
  labels, ingested as the agent sends them) and one that sent nothing. The dashboard opens on 1 h
  windows (the policy's 24 h would show one), draws the AUROC/AP reference and alert lines across
  the plot with a single window, lists every group and tag as a cohort, and shows rollouts that
  reached no device (old rows) without a green "completed 0 %".

Screenshots are kept with the test output; ``EDGEFLEET_UPDATE_DOCS=1`` copies them to
docs/screenshots/ (demo-390.png, demo-1360.png, dashboard-fresh.png), which is how the committed
ones were made.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from compiler.bundle import bundle_files
from edgefleet.bundle_format import canonical_json, open_bundle, pack, verify
from edgefleet_cli.samples.telco_churn import make_telco_churn
from fleet_server.core import ServerConfig
from fleet_server.db import Rollout
from fleet_server.serve import FleetServer
from runtimes.python import Scorer
from tests.fleet_server.conftest import Api, enroll, wait_for
from tests.fleet_server.monitoring.conftest import DeviceSim
from tests.runtimes.conftest import lr_result  # noqa: F401 - the compiled churn model
from tests.web.conftest import CHROMIUM, ROOT, require_browser_tools

pytestmark = pytest.mark.timeout(300)
DRIVER = Path(__file__).with_name("pages.mjs")
TIMEOUT = 240.0
HOUR = 3600.0
SCREENSHOTS = ("demo-390.png", "demo-1360.png", "dashboard-fresh.png")


def _signed(result: Any, key: Any, version: int) -> bytes:
    """The compiled bundle re-signed at ``version`` (same artifacts, as make_bundle does)."""
    manifest = json.loads(canonical_json(result.manifest))
    manifest["version"] = version
    files = bundle_files(manifest, [], key)
    files.update({k: v for k, v in result.files.items() if k.startswith("artifacts/")})
    return pack(files)


def _status(api: Api, cred: dict[str, Any], version: int | None) -> None:
    body = {"capabilities": {"backends": ["onnx"], "formats": ["onnx"]}, "health": "ok" if version else "no-model",
            "active_model": "churn" if version else None, "active_version": version}
    code, err, _ = api("POST", f"/api/v1/devices/{cred['device_id']}/status", body, token=cred["token"])
    assert code == 204, err


def _fresh(server: FleetServer, lr: Any, key: Any, tmp: Path) -> None:
    """One model, a completed rollout to the store, an hour of the store's telemetry, a silent second device."""
    api = Api(server)
    archive = _signed(lr, key, 1)
    assert api("POST", "/api/v1/models", raw=archive)[0] == 201
    store, web = enroll(api, "store-1", "stores", ["pilot"]), enroll(api, "web-1", "online")
    _status(api, store, 1)
    _status(api, web, None)
    code, r, _ = api("POST", "/api/v1/rollouts", {"model": "churn", "version": 1, "steps": [100], "selector": {"groups": ["stores"]}})
    assert code == 201, r
    wait_for(lambda: api("GET", f"/api/v1/rollouts/{r['id']}")[1]["state"] == "completed", what="the store's rollout", timeout=20)
    (tmp / "churn-v1.tar").write_bytes(archive)
    b = open_bundle(tmp / "churn-v1.tar")
    sim = DeviceSim(server.fleet, Scorer(verify(b, key.public_key()), b.files), "store-1", sample_rate=0.5, seed=7)
    hour = math.floor(time.time() / HOUR) * HOUR
    t0, t1 = (hour, time.time() - 1.0) if time.time() - hour > 600 else (hour - HOUR, hour - 1.0)  # one hourly window
    sim.run_window(make_telco_churn(400, seed=21), t0, t1, prefix="fresh")
    sim.send([sim.outcome_message(s["entity_id"], s["label"], min(s["created"] + 30.0, t1 - 61.0)) for s in sim.scored])


def _add_empty_rollouts(server: FleetServer) -> None:
    """Rows a server kept from before rollouts that reach nobody were refused: one completed, one aborted."""
    with server.fleet.session() as s:
        for state in ("completed", "aborted"):
            s.add(Rollout(model="churn", version=1, selector={"groups": ["nosuchgroup"]}, steps=[100.0], gates={}, state=state,
                          history=[{"ts": "2026-01-01T00:00:00Z", "event": state, "step": 0}]))


@pytest.fixture(scope="module")
def session(web_bundle: dict[str, Any], lr_result: Any, keypair: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:  # noqa: F811
    node = require_browser_tools()
    out = tmp_path_factory.mktemp("pages")
    servers: dict[str, FleetServer] = {}
    proc = None
    try:
        for name in ("demo", "empty", "fresh"):
            cfg = ServerConfig(data_dir=tmp_path_factory.mktemp(name), trust_keys=[keypair["public_path"]], embedded_broker=False,
                               port=0, reconcile_seconds=0.2)
            servers[name] = FleetServer(cfg).start()
        demo = Api(servers["demo"])
        for v in (1, 2):
            assert demo("POST", "/api/v1/models", raw=_signed(web_bundle["result"], keypair["private"], v))[0] == 201
        _fresh(servers["fresh"], lr_result, keypair["private"], out)
        plan = {"demo_url": servers["demo"].url + "/demo/", "empty_url": servers["empty"].url,
                "empty_token": servers["empty"].fleet.secrets.admin_token, "dashboard_url": servers["fresh"].url + "/dashboard/",
                "token": servers["fresh"].fleet.secrets.admin_token, "out": str(out), "chromium": CHROMIUM}
        (out / "plan.json").write_text(json.dumps(plan))
        proc = subprocess.Popen([node, str(DRIVER), str(out / "plan.json")], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        watchdog = threading.Timer(TIMEOUT, proc.kill)
        watchdog.start()
        results: dict[str, Any] = {}
        t0 = time.monotonic()
        try:
            assert proc.stdout is not None and proc.stdin is not None
            for line in proc.stdout:
                if line.startswith("@@result "):
                    r = json.loads(line[9:])
                    results[r["scenario"]] = r
                elif line.startswith("@@wait "):
                    if json.loads(line[7:])["event"] == "add-empty-rollouts":
                        _add_empty_rollouts(servers["fresh"])
                    proc.stdin.write("ok\n")
                    proc.stdin.flush()
                elif line.startswith("@@console "):
                    results["console"] = json.loads(line[10:])
            proc.wait(timeout=30)
        finally:
            watchdog.cancel()
        stderr = proc.stderr.read() if proc.stderr else ""
        if not results:
            pytest.fail(f"the pages driver produced no results (exit {proc.returncode}): {stderr[-3000:]}")
        fresh = Api(servers["fresh"])
        results["api"] = {q: fresh("GET", f"/api/v1/models/churn/drift?{q}")[:2] for q in ("window_seconds=59", "window_seconds=abc")}
        results["api"]["hourly"] = fresh("GET", "/api/v1/models/churn/performance?window_seconds=3600")[1]["window_seconds"]
        results.update(out=out, stderr=stderr, seconds=time.monotonic() - t0)
        return results
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        for s in servers.values():
            s.stop()


def _ok(session: dict[str, Any], name: str) -> dict[str, Any]:
    r = session.get(name)
    assert r is not None, f"scenario {name} did not run: {session.get('stderr', '')[-2000:]}"
    assert r["ok"], f"{name} failed in the browser: {r.get('error')}\nconsole: {r.get('console')}"
    return r


def test_demo_fits_a_phone_screen_without_sideways_scrolling(session: dict[str, Any]) -> None:
    r = _ok(session, "demo_phone")
    for width in (360, 375, 390):
        o = r[f"w{width}"]
        assert o["innerWidth"] == width and o["scrollWidth"] <= width, f"{width} px: page is {o['scrollWidth']} px wide: {o['sticking_out']}"
        assert o["sticking_out"] == [], o
        assert o["probability"].endswith("%"), "and it scored"


def test_demo_model_picker_lists_every_version_and_switches(session: dict[str, Any]) -> None:
    r = _ok(session, "demo_picker")
    assert r["picker_visible"]
    assert [(o["value"], o["selected"]) for o in r["options"]] == [("churn@2", True), ("churn@1", False)], "newest first, and chosen"
    assert r["model"] == "churn v2" and r["overflow"]["scrollWidth"] <= 1360
    picked = r["picked"]
    assert "model=churn" in picked["url"] and "version=1" in picked["url"]
    assert picked["model"] == "churn v1" and [o["value"] for o in picked["options"] if o["selected"]] == ["churn@1"]
    unknown = r["unknown"]
    assert "model: nosuch has no onnx or tfjs artifact here; the page can run churn v1, churn v2" in unknown["error"], unknown
    assert unknown["picker_visible"] and unknown["options"] == 2, unknown


def test_demo_without_a_model_says_how_to_publish_one(session: dict[str, Any]) -> None:
    r = _ok(session, "demo_empty")
    assert r["empty_visible"] and not r["error_visible"], r
    assert "No model published yet" in r["empty_text"] and "edgefleet publish" in r["empty_text"]
    assert "refused" not in r["empty_text"] + r["label"]
    assert r["pill"] == "No model yet", "the badge leaves 'Loading…'"
    assert r["overflow"]["scrollWidth"] <= 390, r["overflow"]


def test_fresh_dashboard_opens_on_hourly_windows_and_draws_reference_lines(session: dict[str, Any]) -> None:
    r = _ok(session, "dashboard_fresh")
    sel = r["selection"]
    assert sel["window"] == "auto" and sel["window_options"][0] == "auto (1 h)" and "Windows of 1 h" in sel["footnote"], sel
    assert "24 h" in sel["footnote"], "and says that alerts use the policy's windows"
    charts = r["charts"]
    assert not charts["drift"]["empty"] and charts["drift"]["labels"] == 1, charts["drift"]
    for name in ("auroc", "ap"):
        c = charts[name]
        assert not c["empty"] and c["labels"] == 1, (name, c)
        lines = {d["label"].split(" ")[0]: d for d in c["datasets"]}
        assert lines["realized"]["points"] == 1 and lines["estimated"]["points"] == 1, lines
        for line in ("reference", "alert"):
            assert lines[line]["hline_coverage"] > 0.3, f"{name}: the {line} line is drawn across the plot with one window: {lines[line]}"
    threshold = next(d for d in charts["drift"]["datasets"] if d["label"].startswith("threshold"))
    assert threshold["hline_coverage"] > 0.3, threshold
    assert set(sel["cohorts"]) == {"all", "group=stores", "group=online", "tag=pilot"}, "every group and tag, with telemetry or not"
    daily = r["daily"]
    assert daily["selection"]["window"] == "86400" and daily["charts"]["auroc"]["labels"] == 1
    rows = r["rollouts"]["rows"]
    assert rows[0]["look"] == "completed" and rows[0]["pct"] == "100%" and r["rollouts"]["kpi"] == "100%"


def test_rollouts_that_reached_nobody_are_not_shown_as_completed(session: dict[str, Any]) -> None:
    after = _ok(session, "dashboard_fresh")["after"]
    assert after["kpi"] == "0/0" and "reached no device" in after["kpi_sub"], after
    empty = [row for row in after["rows"] if row["look"] == "empty"]
    assert len(empty) == 2 and {row["badge"] for row in empty} == {"completed · no devices", "aborted · no devices"}, after
    assert all(row["pct"] == "0/0" for row in empty)


def test_dashboard_fits_a_phone_screen(session: dict[str, Any]) -> None:
    o = _ok(session, "dashboard_phone")["overflow"]
    assert o["scrollWidth"] <= 390 and o["sticking_out"] == [], o


def test_empty_dashboard_names_cli_commands(session: dict[str, Any]) -> None:
    cards = _ok(session, "dashboard_empty")["cards"]
    texts = {name: c["empty_text"] for name, c in cards.items()}
    assert all(c["empty"] for c in cards.values()), texts
    assert "edgefleet devices token" in texts["versions"] and "edgefleet agent enroll" in texts["versions"]
    assert "edgefleet rollout start" in texts["rollouts"] and "edgefleet publish" in texts["drift"]
    assert not any("POST /api" in t for t in texts.values()), texts


def test_screenshots_are_saved(session: dict[str, Any]) -> None:
    for name in SCREENSHOTS:
        png = session["out"] / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000, name
        if os.environ.get("EDGEFLEET_UPDATE_DOCS"):  # refresh the README's pictures on request only
            (ROOT / "docs" / "screenshots").mkdir(exist_ok=True)
            shutil.copyfile(png, ROOT / "docs" / "screenshots" / name)
    noisy = [m for m in session.get("console", {}).get("console", []) if "404" not in m]  # the empty demo's current.json
    assert noisy == [], noisy
    print(f"pages session {session['seconds']:.1f}s; screenshots in {session['out']}")


def test_report_window_width_is_checked_in_one_line(session: dict[str, Any]) -> None:
    api = session["api"]
    assert api["window_seconds=59"] == (400, {"error": "window_seconds: 59 is outside [60, 31622400]"}), api
    assert api["window_seconds=abc"][0] == 400 and api["window_seconds=abc"][1]["error"].startswith("window_seconds: expected an integer")
    assert api["hourly"] == 3600.0
