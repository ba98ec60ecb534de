"""What both shells share: the property descriptors (built with the host's own ``nifiapi`` classes) and their reading.

The host's classes are passed in, so this module imports no ``nifiapi`` (it is not on PyPI and
differs between NiFi 2.x and MiNiFi C++), and the shells stay a few lines each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runtimes.nifi.core import OUTPUT_MODES, ScoreChurnCore, settings_from_properties
from runtimes.nifi.telemetry import FlowTelemetry, FlowTelemetryConfig

DESCRIPTION = ("Scores JSON records (one object, an array, or JSON Lines) with a signed edgefleet churn bundle, verified "
               "(signature and sha256) before it is loaded and again whenever the file changes; an unverifiable bundle is "
               "refused and the last good one keeps scoring. Invalid records go to failure with the field named.")
TAGS = ["edgefleet", "churn", "scoring", "onnx", "machine learning", "c2"]
VERSION = "1.0.0"

PROPERTIES: list[tuple[str, str, bool, str | None]] = [
    ("Model Bundle Path", "The synced bundle: <asset dir>/edgefleet/<model>/bundle.tar (a stable path; the C2 server changes "
     "the asset id with every version), or @{asset-id:<id>} to pin one version", True, None),
    ("Trusted Public Keys", "A publisher public key (PEM) or a folder of them: <asset dir>/edgefleet/keys", True, None),
    ("Output Mode", "json: the records with churn_probability, churn_label and model_version; attributes: content kept, "
     "score.* attributes", True, "json"),
    ("Probability Threshold", "Overrides the bundle's threshold for churn_label (0..1); empty: the bundle's", False, None),
    ("Entity ID Field", "A record field sent with sampled predictions so delayed outcomes join (e.g. customerID)", False, None),
    ("Fleet Server URL", "Telemetry: the fleet server (empty: no telemetry)", False, None),
    ("Device ID", "Telemetry: the agent's device id (as enrolled with kind minifi)", False, None),
    ("Device Token", "Telemetry: the agent's device token", False, None),
    ("Telemetry Outbox", "Telemetry: the outbox file (kept across restarts)", False, None),
    ("Telemetry Sample Rate", "Telemetry: fraction of predictions sent with their score (sketches count every record)", False, "0.1"),
]


def descriptors(PropertyDescriptor: Any, StandardValidators: Any, ExpressionLanguageScope: Any) -> list[Any]:
    out = []
    for name, desc, required, default in PROPERTIES:
        kw: dict[str, Any] = {"name": name, "description": desc, "required": required,
                              "validators": [StandardValidators.NON_EMPTY_VALIDATOR] if required else [StandardValidators.ALWAYS_VALID]}
        if default is not None:
            kw["default_value"] = default
        if name == "Output Mode":
            kw["allowable_values"] = list(OUTPUT_MODES)
        if name == "Device Token":
            kw["sensitive"] = True
        if name in ("Model Bundle Path", "Trusted Public Keys", "Telemetry Outbox"):
            kw["expression_language_scope"] = ExpressionLanguageScope.ENVIRONMENT  # @{asset-id:...} and ${...} resolve here
        out.append(PropertyDescriptor(**kw))
    return out


def read_properties(context: Any, descs: list[Any]) -> dict[str, str | None]:
    values: dict[str, str | None] = {}
    for d in descs:
        prop = context.getProperty(d)
        values[d.name] = None if prop is None else prop.evaluateAttributeExpressions().getValue()
    return values


def build_core(values: dict[str, str | None]) -> ScoreChurnCore:
    telemetry = None
    if values.get("Fleet Server URL"):
        telemetry = FlowTelemetry(FlowTelemetryConfig(
            server=str(values["Fleet Server URL"]), device_id=str(values.get("Device ID") or ""), token=str(values.get("Device Token") or ""),
            outbox_path=Path(values.get("Telemetry Outbox") or "edgefleet-outbox.sqlite"),
            sample_rate=float(values.get("Telemetry Sample Rate") or 0.1)))
    return ScoreChurnCore(settings_from_properties(values), telemetry=telemetry)
