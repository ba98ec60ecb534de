"""Shared set-up for the fleet-server benches: a real Mosquitto, a real FleetServer, signed bundles.

Everything listens on 127.0.0.1 and lives in a temporary folder the caller removes. Bundles are
made the way tests/runtimes/conftest.py makes them: compile once, then re-sign the manifest at
any version with compiler.bundle.bundle_files + edgefleet.bundle_format.pack.
"""

from __future__ import annotations

import json
import math
import resource
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "examples"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (1,000 MQTT clients + Mosquitto's side of them)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def pct(samples: list[float], q: float) -> float:
    """Percentile with linear interpolation; NaN for no samples."""
    s = sorted(samples)
    if not s:
        return math.nan
    k = (len(s) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def features(rows: int, seed: int = 7) -> list[dict[str, Any]]:
    """Churn records as a device receives them: JSON-like dicts, NaN -> None."""
    from edgefleet_cli.samples.telco_churn import CATEGORICAL, NUMERIC, make_telco_churn

    df = make_telco_churn(rows, seed=seed)
    cols = CATEGORICAL + NUMERIC
    return [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()} for r in df[cols].to_dict("records")]


@dataclass
class Bundles:
    private_key: Any
    public_path: Path
    manifest: dict[str, Any]
    artifacts: dict[str, bytes]
    out_dir: Path

    def make(self, version: int) -> Path:
        """A correctly signed bundle archive of the compiled model at ``version``."""
        from compiler.bundle import bundle_files
        from edgefleet.bundle_format import canonical_json, pack

        manifest = json.loads(canonical_json(self.manifest))
        manifest["version"] = version
        files = bundle_files(manifest, [], self.private_key)
        files.update(self.artifacts)
        out = self.out_dir / f"{manifest['name']}-v{version}.tar"
        out.write_bytes(pack(files))
        return out


def compile_bundles(tmp: Path, family: str = "lr", name: str = "churn", rows: int = 3000) -> tuple[Bundles, float]:
    """Fit ``family`` on synthetic churn data and compile it to ONNX once; returns (bundles, seconds)."""
    import time

    from train_churn import make_pipeline

    from compiler import compile as compile_model
    from edgefleet import keys
    from edgefleet_cli.samples.telco_churn import CATEGORICAL, LABEL, NUMERIC, make_telco_churn

    t0 = time.perf_counter()
    df = make_telco_churn(rows, seed=1)
    split = int(len(df) * 0.7)
    train, holdout = df.iloc[:split], df.iloc[split:].reset_index(drop=True)
    model = make_pipeline(family).fit(train[CATEGORICAL + NUMERIC], train[LABEL])
    priv_path, pub_path = keys.generate_keypair(tmp / "publisher-keys")
    priv = keys.load_private_key(priv_path)
    res = compile_model(model, holdout, targets=["onnx"], name=name, version=1, private_key=priv, label=LABEL,
                        created_at="2026-11-01T00:00:00Z")
    arts = {k: v for k, v in res.files.items() if k.startswith("artifacts/")}
    out = tmp / "bundles"
    out.mkdir(exist_ok=True)
    return Bundles(priv, pub_path, dict(res.manifest), arts, out), time.perf_counter() - t0


def start_mosquitto(tmp: Path) -> Any:
    """An anonymous loopback Mosquitto on a free port (the fleet tests' broker)."""
    from tests.support.mqtt_broker import Mosquitto

    d = tmp / "mosquitto"
    d.mkdir(exist_ok=True)
    return Mosquitto(d).start()


def start_server(tmp: Path, trust_key: Path, mqtt_url: str | None = None, **kw: Any) -> Any:
    """A FleetServer on SQLite in ``tmp/fleet``, HTTP on a free loopback port."""
    from fleet_server.core import ServerConfig
    from fleet_server.serve import FleetServer

    cfg = ServerConfig(data_dir=tmp / "fleet", mqtt_url=mqtt_url, embedded_broker=False, port=0, trust_keys=[trust_key], **kw)
    return FleetServer(cfg).start()


def api(server: Any, method: str, path: str, body: Any = None, raw: bytes | None = None, timeout: float = 60) -> tuple[int, Any]:
    """One admin request; returns (status, parsed JSON or bytes)."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(server.url + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {server.fleet.secrets.admin_token}")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            text = r.read()
            return r.status, (json.loads(text) if text and "json" in r.headers.get("Content-Type", "") else text)
    except urllib.error.HTTPError as e:
        text = e.read()
        try:
            return e.code, json.loads(text)
        except ValueError:
            return e.code, text


def register(server: Any, bundle: Path) -> dict[str, Any]:
    code, body = api(server, "POST", "/api/v1/models", raw=bundle.read_bytes())
    if code != 201:
        raise RuntimeError(f"registering {bundle.name}: HTTP {code}: {body!r}")
    return body


def enroll_many(server: Any, n: int, prefix: str = "sim", group: str = "bench") -> list[dict[str, Any]]:
    """Enroll ``n`` devices through the server's own enrollment code (one-time token each)."""
    from fleet_server import devices

    fleet = server.fleet
    creds = []
    for i in range(n):
        tok = devices.create_enrollment_token(fleet, group)
        creds.append(devices.enroll(fleet, tok, f"{prefix}-{i:04d}"))
    return creds


def counters(server: Any) -> dict[str, int]:
    code, body = api(server, "GET", "/api/v1/counters")
    if code != 200:
        raise RuntimeError(f"counters: HTTP {code}: {body!r}")
    return body
