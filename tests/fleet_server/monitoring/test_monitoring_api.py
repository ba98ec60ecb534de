"""Monitoring over the real server: policy validation, alerts published on a real Mosquitto and
POSTed to a loopback webhook, reports, and /metrics parsed by prometheus_client's parser."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import paho.mqtt.client as mqtt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgefleet_cli.samples.telco_churn import make_telco_churn
from runtimes.python import Scorer
from tests.fleet_server.conftest import Api, wait_for
from tests.fleet_server.monitoring.conftest import DAY, T0, DeviceSim, add_device
from tests.support.mqtt_broker import Mosquitto, free_port


@pytest.fixture()
def broker(tmp_path: Path) -> Any:
    b = Mosquitto(tmp_path).start()
    yield b
    b.stop()


class Webhook:
    """A loopback HTTP server that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                outer.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *a: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/hook"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


def test_policy_api_validates_and_names_the_field(make_server: Any, make_bundle: Callable[..., Path]) -> None:
    api = Api(make_server())
    assert api("POST", "/api/v1/models", raw=make_bundle(1).read_bytes())[0] == 201
    code, body, _ = api("GET", "/api/v1/models/churn/policy")
    assert code == 200 and body["stored"] is False and body["policy"]["fire_after"] == 3 and body["policy"]["webhook"] is None
    for bad, field in [({"alpha": 2}, "policy.alpha"), ({"psi_threshold": 0}, "policy.psi_threshold"), ({"min_count": 1.5}, "policy.min_count"),
                       ({"fire_after": True}, "policy.fire_after"), ({"webhook": "ftp://x"}, "policy.webhook"), ({"surprise": 1}, "policy.surprise"),
                       ({"segment_fields": ["group"]}, "policy.segment_fields"), ({"lookback_windows": 2}, "policy.lookback_windows"),
                       ([1, 2], "policy")]:
        code, err, _ = api("PUT", "/api/v1/models/churn/policy", bad)
        assert code == 400 and err["error"].startswith(field + ":"), (bad, err)
    code, body, _ = api("PUT", "/api/v1/models/churn/policy", {"fire_after": 2, "segment_fields": ["Contract"]})
    assert code == 200 and body["policy"]["fire_after"] == 2 and body["policy"]["segment_fields"] == ["Contract"]
    code, body, _ = api("PUT", "/api/v1/models/churn/policy", {"clear_after": 4})  # partial: the rest is kept
    assert body["policy"]["fire_after"] == 2 and body["policy"]["clear_after"] == 4
    assert api("GET", "/api/v1/models/churn/policy")[1]["stored"] is True
    assert api("PUT", "/api/v1/models/nope/policy", {"alpha": 0.05})[0] == 404
    assert api("GET", "/api/v1/models/churn/policy", token=None)[0] == 401
    assert api("GET", "/api/v1/alerts?state=loud")[0] == 400
    assert api("GET", "/metrics", token=None)[0] == 401
    assert api("GET", "/metrics", token="not-the-admin")[0] == 403


def test_alerts_go_to_mqtt_and_the_webhook_and_metrics_export_them(tmp_path: Path, broker: Mosquitto, make_server: Any,
                                                                     make_bundle: Callable[..., Path], lr_result: Any) -> None:
    server = make_server(mqtt_url=broker.url)
    api = Api(server)
    api("POST", "/api/v1/models", raw=make_bundle(1).read_bytes())
    hook = Webhook()
    received: list[tuple[str, dict[str, Any], bool]] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="alert-watcher")
    sub.on_message = lambda c, u, m: received.append((m.topic, json.loads(m.payload), bool(m.retain)))
    sub.on_connect = lambda c, u, f, rc, p=None: c.subscribe("edgefleet/v1/alerts/#", qos=1)
    sub.connect("127.0.0.1", broker.port)
    sub.loop_start()
    try:
        wait_for(lambda: server.bridge.connected.is_set() and sub.is_connected(), what="both MQTT clients connected")
        code, _, _ = api("PUT", "/api/v1/models/churn/policy", {"fire_after": 1, "clear_after": 1, "lookback_windows": 4,
                                                                "window_seconds": DAY, "webhook": hook.url})
        assert code == 200
        fleet = server.fleet
        scorer = Scorer(lr_result.manifest, lr_result.files)  # the registered v1 (make_bundle re-signs this manifest)
        sims = []
        for i in range(2):
            add_device(fleet, f"m{i}", "stores")
            sims.append(DeviceSim(fleet, scorer, f"m{i}", sample_rate=0.5, seed=i))
        for i, sim in enumerate(sims):  # window 0: a 30% price rise
            sim.run_window(make_telco_churn(400, seed=50 + i, price_shift=0.3), T0, T0 + DAY, prefix="w0")
        code, body, _ = api("POST", "/api/v1/monitor/run", {"now": T0 + DAY + 1})
        assert code == 200
        fired = [e for e in body["events"] if e["event"] == "fired"]
        assert ("all", "MonthlyCharges") in {(e["alert"]["cohort"], e["alert"]["subject"]) for e in fired}
        assert api("POST", "/api/v1/monitor/run", {"now": T0 + DAY + 1})[1]["events"] == [], "idempotent"
        wait_for(lambda: len(received) >= len(fired), what="alerts on MQTT", timeout=10)
        assert {t for t, _, _ in received} == {"edgefleet/v1/alerts/churn"} and not any(r for _, _, r in received)
        assert sorted(p["alert"]["id"] for _, p, _ in received) == sorted(e["alert"]["id"] for e in fired)
        assert sorted(b["alert"]["id"] for b in hook.bodies) == sorted(e["alert"]["id"] for e in fired)
        code, alerts, _ = api("GET", "/api/v1/alerts?model=churn&state=firing")
        assert code == 200 and len(alerts["alerts"]) == len(fired)

        code, text, headers = api("GET", "/metrics")
        assert code == 200 and headers["content-type"].startswith("text/plain")
        fams = {f.name: f for f in text_string_to_metric_families(text.decode())}
        psi = {(s.labels["cohort"], s.labels["feature"]): s.value for s in fams["edgefleet_drift_psi"].samples}
        assert psi[("all", "MonthlyCharges")] > 0.1 and psi[("all", "<score>")] >= 0.0
        firing = {s.labels["model"]: s.value for s in fams["edgefleet_alerts_firing"].samples}
        assert firing == {"churn": len(fired)}
        est = {(s.labels["cohort"], s.labels["kind"]) for s in fams["edgefleet_auroc"].samples}
        assert ("all", "estimated") in est
        counters = {s.labels["counter"]: s.value for s in fams["edgefleet_telemetry"].samples if s.name == "edgefleet_telemetry_total"}
        assert counters["telemetry_accepted"] >= 400 and counters["alert_webhook_sent"] == len(fired)
        devices = {(s.labels["model"], s.labels["version"]): s.value for s in fams["edgefleet_devices"].samples}
        assert devices == {("", ""): 2.0}, "the simulated devices report no active model"

        dead = f"http://127.0.0.1:{free_port()}/gone"  # delivery failures are counted, never raised
        api("PUT", "/api/v1/models/churn/policy", {"webhook": dead})
        for i, sim in enumerate(sims):  # window 1: prices back to normal, the alerts clear
            sim.run_window(make_telco_churn(400, seed=60 + i), T0 + DAY, T0 + 2 * DAY, prefix="w1")
        code, body, _ = api("POST", "/api/v1/monitor/run", {"now": T0 + 2 * DAY + 1})
        cleared = {e["alert"]["id"] for e in body["events"] if e["event"] == "cleared"}
        assert code == 200 and {e["alert"]["id"] for e in fired if e["alert"]["kind"] == "drift"} <= cleared
        assert api("GET", "/api/v1/counters")[1]["alert_webhook_failed"] == len(body["events"])
        wait_for(lambda: sum(p["event"] == "cleared" for _, p, _ in received) == len(cleared), what="cleared alerts on MQTT", timeout=10)

        code, drift, _ = api("GET", f"/api/v1/models/churn/drift?start={T0}")
        assert code == 200 and [w["window_start"] for w in drift["windows"] if w["cohort"] == "all"] == [T0, T0 + DAY]
        code, perf, _ = api("GET", f"/api/v1/models/churn/performance?version=1&start={T0}")
        assert code == 200 and perf["assumptions"] and perf["windows"][0]["estimated"]["auroc"] > 0.6
    finally:
        sub.loop_stop()
        sub.disconnect()
        hook.close()
