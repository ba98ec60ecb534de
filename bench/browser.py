"""Browser runtime timings in Debian's headless Chromium, per runtime (ONNX wasm, TF.js cpu).

Compiles the churn RandomForest (100 trees) to onnx + tfjs, registers it in a real in-process
fleet server, and drives the demo page (/demo) with playwright-core (tests/web/browser.mjs):

* first load: a fresh browser profile, navigation start -> first score on screen (downloads
  the page, the runtime library and its wasm, the bundle; verifies signature and sha256);
* cached load: a second visit in the same profile (service worker + verified-artifact cache;
  the manifest is still fetched and everything is verified again);
* per row: ``scorer.score(record)`` one record at a time (validate + encode + run), and one
  ``scoreMany`` over the 300 vector records, divided by 300.

Each figure is the median of ``--runs`` fresh profiles. Shared 2-core machine: treat as ±30%.

    .venv/bin/python bench/browser.py [--runs 3] [--rows 300]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rows", type=int, default=300, help="single-row calls timed per runtime and run")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from fleet_server import model_versions as registry
    from fleet_server.core import ServerConfig
    from fleet_server.serve import FleetServer
    from tests.web import vectors as vec

    node = shutil.which("node")
    if node is None or not Path(args.chromium).exists():
        sys.exit("needs node and Chromium: run `make` first")
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        key = Ed25519PrivateKey.generate()
        (tmp / "public.pem").write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
        t0 = time.perf_counter()
        result, model, frame = vec.compile_churn(tmp / "churn-v1", key)
        print(f"compiled churn RF (onnx + tfjs) in {time.perf_counter() - t0:.1f}s; "
              + ", ".join(f"{a['format']} {a['size'] / 1e6:.1f} MB" for a in result.manifest["artifacts"]))
        vectors = vec.write(vec.build(result, model, frame), tmp)
        batch = len(json.loads(vectors.read_text())["scoring"]["records"])
        server = FleetServer(ServerConfig(data_dir=tmp / "fleet", trust_keys=[tmp / "public.pem"], embedded_broker=False, port=0)).start()
        try:
            registry.register(server.fleet, Path(result.archive).read_bytes())
            plan = {"url": server.url + "/demo/", "vectors": str(vectors), "chromium": args.chromium,
                    "scenarios": ["bench"] * args.runs, "bench_rows": args.rows}
            (tmp / "plan.json").write_text(json.dumps(plan))
            proc = subprocess.run([node, str(ROOT / "tests" / "web" / "browser.mjs"), str(tmp / "plan.json")], cwd=ROOT,
                                  capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
        finally:
            server.stop()
    runs = [json.loads(ln[9:]) for ln in proc.stdout.splitlines() if ln.startswith("@@result ")]
    bad = [r for r in runs if not r["ok"]]
    if not runs or bad:
        sys.exit(f"browser bench failed: {(bad[0]['error'] if bad else proc.stderr)[-2000:]}")
    ver = subprocess.run([args.chromium, "--version"], capture_output=True, text=True).stdout.strip()
    print(f"{ver}; {args.runs} fresh profiles per runtime, medians; {batch}-record batch")
    print(f"{'runtime':<28} {'first load':>11} {'cached load':>12} {'per row (1)':>12} {'per row (batch)':>16}")
    names = {"onnx": "onnxruntime-web 1.30 (wasm)", "tfjs": "@tensorflow/tfjs 4.22 (cpu)"}
    for rt in ("onnx", "tfjs"):
        def med(k: str) -> float:
            return statistics.median(r[rt][k] for r in runs)
        print(f"{names[rt]:<28} {med('first_load_ms'):>9.0f}ms {med('cached_load_ms'):>10.0f}ms "
              f"{med('single_row_ms'):>10.3f}ms {med('batch_per_row_ms') * 1000:>13.1f}µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
