"""The dashboard's fairness card in real headless Chromium (tests/web/fairness.mjs, the tests/web harness)
on a real server: a fair churn model's predictions and delayed labels over four daily windows ending
at today's midnight, senior churners scored 0.15 lower in the last three, the monitor run per window.

The card must plot each group's disparity against its reference with its interval band, the tolerance
line over its shaded band, red points where the interval is beyond the tolerance, the group sizes, and
a verdict pill that agrees with the API's report; a server whose devices send no features shows the
privacy empty state. The card's screenshot is saved with the test output (EDGEFLEET_UPDATE_DOCS=1 also
copies it to docs/screenshots/dashboard-fairness.png).
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

from runtimes.python import Scorer
from tests.fleet_server.conftest import Api
from tests.fleet_server.monitoring.conftest import DAY, add_device
from tests.fleet_server.monitoring.test_fairness_monitor import POLICY, fair_scorer, feed_window  # noqa: F401 - the fixture
from tests.fleet_server.monitoring.test_service import register_manifest
from tests.web.conftest import CHROMIUM, ROOT, require_browser_tools

pytestmark = pytest.mark.timeout(300)
DRIVER = ROOT / "tests" / "web" / "fairness.mjs"
WINDOWS, BIAS_FROM, ROWS = 4, 1, 4000


def test_fairness_card_plots_intervals_tolerance_and_group_sizes(tmp_path: Path, make_server: Any, fair_scorer: Scorer) -> None:  # noqa: F811
    node = require_browser_tools()
    base = math.floor(time.time() / DAY) * DAY - WINDOWS * DAY
    policy = {**POLICY, "fairness_reference": {"SeniorCitizen": 0, "gender": "Female"}, "fire_after": 2, "clear_after": 2}
    servers = {}
    for name, features in (("fleet", True), ("private", False)):
        server = make_server(data_dir=tmp_path / name)
        api = Api(server)
        register_manifest(server.fleet, dict(fair_scorer.manifest))
        add_device(server.fleet, "d0", "stores")
        assert api("PUT", "/api/v1/models/churn/policy", policy)[0] == 200
        for w in range(WINDOWS if features else 3):  # three: the page's "auto" width keeps the policy's day
            feed_window(server.fleet, fair_scorer, w, bias=0.15 if w >= BIAS_FROM else 0.0, features=features,
                        rows=ROWS if features else 300, base=base)
            assert api("POST", "/api/v1/monitor/run", {"now": base + (w + 1) * DAY + 1})[0] == 200
        servers[name] = (server, api)
    (fleet, api), (private, _) = servers["fleet"], servers["private"]
    out = tmp_path / "browser"
    out.mkdir()
    plan = {"url": fleet.url + "/dashboard/", "token": fleet.fleet.secrets.admin_token, "privacy_url": private.url + "/dashboard/",
            "privacy_token": private.fleet.secrets.admin_token, "out": str(out), "chromium": CHROMIUM}
    (out / "plan.json").write_text(json.dumps(plan))
    proc = subprocess.run([node, str(DRIVER), str(out / "plan.json")], cwd=ROOT, capture_output=True, text=True, timeout=150)
    results = {r["scenario"]: r for r in (json.loads(line[9:]) for line in proc.stdout.splitlines() if line.startswith("@@result "))}
    for name in ("card", "privacy"):
        assert name in results, f"no result for {name} (exit {proc.returncode}): {proc.stderr[-2000:]}"
        assert results[name]["ok"], f"{name}: {results[name].get('error')}\nconsole: {results[name].get('console')}"
    assert results["console"]["console"] == [], results["console"]

    report = api("GET", "/api/v1/models/churn/fairness")[1]
    eo = results["card"]["eo"]
    assert not eo["empty"] and eo["chart"]["labels"] == WINDOWS and eo["chart"]["ink_fraction"] > 0.01, eo
    by_label = {d["label"]: d for d in eo["chart"]["datasets"]}
    senior = by_label["SeniorCitizen=1 vs 0"]
    want = [w["fields"]["SeniorCitizen"]["comparisons"]["1"]["equalized_odds_difference"] for w in report["windows"]]
    assert senior["values"] == pytest.approx([m["value"] for m in want])
    assert by_label["SeniorCitizen=1 interval"]["values"] == pytest.approx([m["ci"][1] for m in want])
    assert by_label["SeniorCitizen=1 interval low"]["values"] == pytest.approx([m["ci"][0] for m in want])
    assert senior["red"] == sum(m["verdict"] == "disparity" for m in want) >= 1, want
    assert "gender=Male vs Female" in by_label and by_label["gender=Male vs Female"]["red"] == 0
    assert by_label["tolerance 0.1"]["values"] == [0.1] * WINDOWS and by_label["within tolerance (<= 0.1)"]["fill"] == "origin"
    assert not any("interval" in text for text in eo["legend"]), eo["legend"]
    last = want[-1]["verdict"]
    assert ("disparity for SeniorCitizen=1" in eo["pill"]) == (last == "disparity"), (eo["pill"], last)
    assert any(g.startswith("SeniorCitizen reference 0") and "1: " in g and "rows" in g and "labeled" in g for g in eo["groups"]), eo["groups"]
    assert "score > 0.3" in eo["sub"]
    assert any("equalized_odds_difference · fairness" in a and "SeniorCitizen=1" in a for a in results["card"]["alerts"]), results["card"]["alerts"]
    ratio = results["card"]["ratio"]
    assert ratio["chart"]["y_title"] == "Demographic-parity ratio" and "acceptable (>= 0.8)" in [d["label"] for d in ratio["chart"]["datasets"]]
    priv = results["privacy"]
    assert priv["empty"] and "Features are not sampled" in priv["empty_text"] and "privacy switch" in priv["empty_text"], priv

    png = Path(results["card"]["screenshot"])
    assert png.stat().st_size > 10_000
    if os.environ.get("EDGEFLEET_UPDATE_DOCS"):
        (ROOT / "docs" / "screenshots").mkdir(exist_ok=True)
        shutil.copyfile(png, ROOT / "docs" / "screenshots" / "dashboard-fairness.png")
    print(f"fairness card screenshot: {png}")
