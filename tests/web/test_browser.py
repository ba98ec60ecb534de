"""The demo in real headless Chromium (Debian's, driven by playwright-core from npm).

One browser session (tests/web/browser.mjs) against a real fleet server with a real compiled
onnx + tfjs churn bundle covers:

* parity: the browser's probabilities equal Python's on the shared vectors (<= 1e-6) for ONNX
  (onnxruntime-web, wasm) and TF.js (cpu), and Chromium's encoder reproduces every encoding
  vector, error text included; the form scores as it is edited; the runtime switch works;
* tamper: an artifact changed in transit is refused with a visible error and nothing is scored;
* offline: after the first visit the server is stopped; a reload still opens the page (service
  worker) and scores with both runtimes from the verified cache; telemetry queued meanwhile is
  delivered when the server is back;
* a screenshot of the demo, kept with the test output (EDGEFLEET_UPDATE_DOCS=1 also copies it to docs/demo.png).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from fleet_server import model_versions as registry
from fleet_server.core import ServerConfig
from fleet_server.serve import FleetServer
from tests.web.conftest import CHROMIUM, ROOT, require_browser_tools

pytestmark = pytest.mark.timeout(240)
DRIVER = Path(__file__).with_name("browser.mjs")
TIMEOUT = 180.0  # the whole browser session; it takes ~20 s here


def _start(data_dir: Path, public_key: Path, port: int = 0) -> FleetServer:
    cfg = ServerConfig(data_dir=data_dir, trust_keys=[public_key], embedded_broker=False, port=port, reconcile_seconds=0.5)
    return FleetServer(cfg).start()


def _stop_like_a_dead_process(server: FleetServer) -> None:
    """Stop, then close the kept-alive connections too, as the exit of a server process would."""
    channels = list(server.http._map.values())
    server.stop()
    for ch in channels:
        try:
            ch.close()
        except OSError:
            pass


@pytest.fixture(scope="module")
def session(web_bundle: dict[str, Any], web_vectors: Path, keypair: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    node = require_browser_tools()
    data_dir = tmp_path_factory.mktemp("fleet")
    out = tmp_path_factory.mktemp("browser")
    server = _start(data_dir, keypair["public_path"])
    servers = [server]
    registry.register(server.fleet, Path(web_bundle["archive"]).read_bytes())
    plan = {"url": server.url + "/demo/", "vectors": str(web_vectors), "out": str(out), "chromium": CHROMIUM,
            "scenarios": ["parity", "tamper", "offline"]}
    (out / "plan.json").write_text(json.dumps(plan))
    proc = subprocess.Popen([node, str(DRIVER), str(out / "plan.json")], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(TIMEOUT, proc.kill)
    watchdog.start()
    results: dict[str, Any] = {}
    events: list[str] = []
    stopped: set[int] = set()
    telemetry = None
    t0 = time.monotonic()
    try:
        assert proc.stdout is not None and proc.stdin is not None
        for line in proc.stdout:
            if line.startswith("@@result "):
                r = json.loads(line[9:])
                results[r["scenario"]] = r
            elif line.startswith("@@wait "):
                event = json.loads(line[7:])["event"]
                events.append(event)
                if event == "stop-server":
                    _stop_like_a_dead_process(servers[-1])
                    stopped.add(id(servers[-1]))
                elif event == "restart-server":  # same port, same data: the page's origin is unchanged
                    servers.append(_start(data_dir, keypair["public_path"], port=server.port))
                proc.stdin.write("ok\n")
                proc.stdin.flush()
            elif line.startswith("@@console "):
                results["console"] = json.loads(line[10:])
        proc.wait(timeout=30)
        if len(servers) > 1:  # what the restarted server's demo sink received from the page's outbox
            with urllib.request.urlopen(servers[-1].url + "/demo/telemetry", timeout=10) as resp:
                telemetry = json.loads(resp.read())
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
        stderr = proc.stderr.read() if proc.stderr else ""
        for s in servers:
            if id(s) not in stopped:
                s.stop()
    if not results.get("parity"):
        pytest.fail(f"the browser driver produced no results (exit {proc.returncode}, {time.monotonic() - t0:.0f}s): {stderr[-3000:]}")
    results.update(seconds=time.monotonic() - t0, out=out, events=events, stderr=stderr, telemetry=telemetry)
    return results


def _ok(session: dict[str, Any], name: str) -> dict[str, Any]:
    r = session.get(name)
    assert r is not None, f"scenario {name} did not run: {session.get('stderr', '')[-2000:]}"
    assert r["ok"], f"{name} failed in the browser: {r.get('error')}\nconsole: {r.get('console')}"
    return r


def test_browser_probabilities_equal_python_for_both_runtimes(session: dict[str, Any], web_vectors: Path) -> None:
    r = _ok(session, "parity")
    vectors = json.loads(web_vectors.read_text())
    n = len(vectors["scoring"]["records"])
    for runtime in ("onnx", "tfjs"):
        got = r["scores"][runtime]
        assert got["rows"] == n
        assert got["max_abs_diff"] <= 1e-6, f"{runtime} in Chromium vs Python: max |dp| {got['max_abs_diff']:.3g}"
    assert r["encoding"]["cases"] == len(vectors["encoding"]) and r["encoding"]["failures"] == []
    assert r["ui"]["runtime"] == "onnx" and r["ui"]["net"] == "online" and 0 <= r["ui"]["probability"] <= 1
    assert r["ui"]["text"].endswith("%") and r["ui"]["label"] in ("Likely to churn", "Likely to stay")
    assert "TensorFlow.js" in r["ui_tfjs"]["runtime"]
    assert abs(r["ui_tfjs"]["probability"] - r["ui_onnx"]["probability"]) <= 1e-6, "the same customer under both runtimes"
    assert r["parity_rows"] == ["onnx", "tfjs"]


def test_tampered_artifact_is_refused_with_a_visible_error(session: dict[str, Any]) -> None:
    r = _ok(session, "tamper")
    assert r["tampered_responses"] >= 1
    assert r["visible"], "the error banner must be visible"
    assert "VerificationError" in r["text"] and "sha256" in r["text"] and "changed or corrupted" in r["text"]
    assert r["scored"] is False and "refused" in r["label"]


def test_page_scores_offline_after_the_first_visit(session: dict[str, Any]) -> None:
    r = _ok(session, "offline")
    assert session["events"] == ["stop-server", "restart-server"]
    assert r["online_before"] == "online" and r["net_after_reload"] == "offline" and r["offline_scorer"] is True
    for runtime in ("onnx", "tfjs"):
        assert r["scores"][runtime]["max_abs_diff"] <= 1e-6, f"offline {runtime}: {r['scores'][runtime]}"
    assert r["ui"]["net"] == "offline" and 0 <= r["ui"]["probability"] <= 1
    assert r["queued"]["depth"] >= 1, "predictions made offline wait in the outbox"
    assert r["flushed"] >= r["queued"]["depth"] and r["after_flush"]["depth"] == 0, "and leave once the server is back"
    tel = session["telemetry"]
    assert tel is not None and tel["received"] == r["flushed"] and tel["recent"][-1]["kind"] == "prediction"


def test_demo_screenshot_is_saved(session: dict[str, Any]) -> None:
    r = _ok(session, "parity")
    png = Path(r["screenshot"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    if os.environ.get("EDGEFLEET_UPDATE_DOCS"):  # refresh the README's picture on request only
        shutil.copyfile(png, ROOT / "docs" / "demo.png")
    took = ", ".join(f"{k} {session[k]['seconds']:.1f}s" for k in ("parity", "tamper", "offline") if k in session)
    print(f"demo screenshot: {png}; browser session {session['seconds']:.1f}s ({took}); offline steps (ms since its start) "
          f"{session.get('offline', {}).get('steps_ms')}")
