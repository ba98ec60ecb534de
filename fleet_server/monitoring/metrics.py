"""Prometheus exposition: a collector over the newest monitor pass and the database.

Drift and performance gauges come from the newest ``run_monitor`` pass (``service.snapshot``;
the newest complete window with a value per cohort); alerts, devices and counters are read
from the database at scrape time. Each app gets its own ``CollectorRegistry``, so several
servers in one process (tests) never share series.

========================================================  =======================================
``edgefleet_drift_psi{model,version,cohort,feature}``      PSI of the primary comparison
                                                            (feature ``<score>`` is the score)
``edgefleet_auroc{model,version,cohort,kind}``              kind ``realized`` or ``estimated`` (CBPE)
``edgefleet_average_precision{model,version,cohort,kind}``  same
``edgefleet_alerts_firing{model}``                          alerts in state firing
``edgefleet_devices{model,version}``                        devices by active model version
``edgefleet_telemetry_total{counter}``                      the ``counters`` table (ingest, rejections,
                                                            alerts, webhook deliveries)
``edgefleet_monitor_last_run_timestamp_seconds``            unix time of the newest pass (0: none yet)
========================================================  =======================================
"""

from __future__ import annotations

from typing import Any, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from fleet_server.core import Fleet
from fleet_server.db import Counter, Device, ModelVersion
from fleet_server.monitoring import service
from fleet_server.monitoring.tables import Alert

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # the text format generate_latest writes


class FleetCollector(Collector):
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    def collect(self) -> Iterator[Any]:
        snap = service.snapshot(self.fleet)
        psi = GaugeMetricFamily("edgefleet_drift_psi", "PSI of the newest window against the cohort's primary comparison",
                                labels=["model", "version", "cohort", "feature"])
        auroc = GaugeMetricFamily("edgefleet_auroc", "AUROC of the newest window (realized from labels, or CBPE-estimated)",
                                  labels=["model", "version", "cohort", "kind"])
        ap = GaugeMetricFamily("edgefleet_average_precision", "Average precision of the newest window (realized or CBPE-estimated)",
                               labels=["model", "version", "cohort", "kind"])
        for (model, version), m in sorted(snap["metrics"].items()):
            for (cohort, feature), value in sorted(m["psi"].items()):
                psi.add_metric([model, str(version), cohort, feature], value)
            for (cohort, kind, metric), value in sorted(m["performance"].items()):
                (auroc if metric == "auroc" else ap).add_metric([model, str(version), cohort, kind], value)
        yield from (psi, auroc, ap)
        firing = GaugeMetricFamily("edgefleet_alerts_firing", "Alerts currently firing", labels=["model"])
        devices = GaugeMetricFamily("edgefleet_devices", "Devices by active model version", labels=["model", "version"])
        counters = CounterMetricFamily("edgefleet_telemetry", "Server counters: ingest, rejections, alerts, webhooks", labels=["counter"])
        with self.fleet.session() as s:
            per_model = dict.fromkeys(sorted(set(s.scalars(select(ModelVersion.name)))), 0)
            for model, n in s.execute(select(Alert.model, func.count()).where(Alert.state == "firing").group_by(Alert.model)):
                per_model[model] = int(n)
            for model, n in per_model.items():
                firing.add_metric([model], n)
            q = select(Device.active_model, Device.active_version, func.count()).group_by(Device.active_model, Device.active_version)
            for model, version, n in s.execute(q):
                devices.add_metric([model or "", "" if version is None else str(version)], int(n))
            for c in s.scalars(select(Counter).order_by(Counter.name)):
                counters.add_metric([c.name], c.value)
        yield from (firing, devices, counters)
        last = GaugeMetricFamily("edgefleet_monitor_last_run_timestamp_seconds", "Unix time of the newest monitor pass (0: none yet)")
        last.add_metric([], snap.get("ran_at") or 0.0)
        yield last


def make_registry(fleet: Fleet) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(fleet))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
