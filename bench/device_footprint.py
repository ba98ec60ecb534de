"""Footprint of the device runtime: a fresh ``[device]`` venv's size, cold start and RSS.

Issue 4, "Footprint": ``pip install edgefleet[device]`` must not pull TensorFlow, scikit-learn,
Flask or the compiler's dependencies, and stay small. In one run this script

* creates a fresh venv and ``pip install <this repo>[device]`` into it (non-editable; pip's
  config here points at local mirrors, so it works offline). pip builds the wheel in the source
  folder (setuptools writes ``build/`` and ``*.egg-info`` there), so it installs from a copy of
  the repo in the temp dir to leave the working tree alone;
* creates the anchor venv, with only onnxruntime and numpy (same versions), and prints
  "ours vs onnxruntime+numpy" for size and start-up;
* checks that none of tensorflow, scikit-learn, flask, skl2onnx, pandas, torch (nor the other
  compiler dependencies) got installed;
* compiles a signed RandomForest churn bundle with this (main) venv, then in the device venv
  times a cold ``python -c "from runtimes.python import Scorer; Scorer.from_bundle(...)"``
  (interpreter start included) and reads the RSS while scoring 10,000 records.

Everything lives in one temp dir, removed at the end.

    .venv/bin/python bench/device_footprint.py [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))

MB = 1 << 20  # sizes as `du -sm` reports them: allocated blocks, 1 MB = 2**20 bytes
# The brief's list, then the rest of the compiler / server / PMML side: none of it belongs on a device.
FORBIDDEN = ["tensorflow", "tensorflow-cpu", "scikit-learn", "sklearn", "flask", "skl2onnx", "pandas", "torch"]
ALSO_NOT_WANTED = ["onnx", "joblib", "scipy", "jsonschema", "sklearn2pmml", "pypmml", "tf-keras", "keras", "werkzeug"]
VENV_TOOLING = {"pip", "setuptools", "wheel"}  # what `python -m venv` puts in every venv
PIP_TIMEOUT = 240

# Runs inside a venv: size of every installed distribution (from its RECORD), as JSON.
SIZES = r"""
import importlib.metadata as md, json, os, sys, sysconfig
site = sysconfig.get_paths()["purelib"]
seen, out = set(), {}
for d in md.distributions():
    total = 0
    for f in d.files or []:
        p = os.path.realpath(f.locate())
        if p in seen or not os.path.isfile(p):
            continue
        seen.add(p)
        total += os.lstat(p).st_blocks * 512
    out[d.metadata["Name"]] = {"version": d.version, "bytes": total}
print(json.dumps({"site": site, "dists": out}))
"""

# Runs inside the device venv: staged import/load timings and RSS while scoring. RSS comes from
# /proc/self/status (VmRSS, and VmHWM for the peak): getrusage's ru_maxrss survives execve, so
# in a child it reports the larger parent's peak from before the exec.
CHILD = r"""
import json, os, sys, time
t0 = time.perf_counter()

def rss_kb(key="VmRSS"):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return -1

bundle, pub, data = sys.argv[1:4]
marks = {"start_rss_kb": rss_kb()}
import numpy
marks["numpy_ms"] = (time.perf_counter() - t0) * 1e3
import onnxruntime
marks["onnxruntime_ms"] = (time.perf_counter() - t0) * 1e3
import cryptography.hazmat.primitives.asymmetric.ed25519
marks["cryptography_ms"] = (time.perf_counter() - t0) * 1e3
import runtimes, runtimes.python
from runtimes.python import Scorer
marks["import_ms"] = (time.perf_counter() - t0) * 1e3
marks["import_rss_kb"] = rss_kb()
scorer = Scorer.from_bundle(bundle, pub)
marks["load_ms"] = (time.perf_counter() - t0) * 1e3
marks["load_rss_kb"] = rss_kb()
with open(data) as fh:
    records = [json.loads(line) for line in fh]
marks["records_rss_kb"] = rss_kb()
t1 = time.perf_counter()
total = 0.0
for r in records:
    total += scorer.score(r).probability
marks["score_s"] = time.perf_counter() - t1
marks["score_rss_kb"] = rss_kb()
marks["peak_rss_kb"] = rss_kb("VmHWM")
marks["n"] = len(records)
marks["mean_p"] = total / len(records)
marks["backend"] = scorer.backend_name
marks["runtimes_file"] = runtimes.__file__
print(json.dumps(marks))
"""


def run(cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: float = PIP_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def setup_vendor() -> list[str]:
    """setup.py's VENDOR list (the node_modules files the wheel ships), read without running setup.py."""
    import ast

    for node in ast.parse((ROOT / "setup.py").read_text()).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "VENDOR" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise SystemExit("setup.py has no VENDOR list")


def make_venv(path: Path, packages: list[str], *, cwd: Path, env: dict[str, str]) -> tuple[Path, float]:
    """``python -m venv`` then ``pip install``; return the venv's python and the seconds it took."""
    t0 = time.perf_counter()
    r = run([sys.executable, "-m", "venv", str(path)], cwd=cwd, env=env, timeout=120)
    if r.returncode:
        raise SystemExit(f"python -m venv {path} failed:\n{r.stderr}")
    py = path / "bin" / "python"
    r = run([str(py), "-m", "pip", "install", "--no-cache-dir", "--no-input", *packages], cwd=cwd, env=env)
    if r.returncode:
        tail = "\n".join((r.stdout + r.stderr).splitlines()[-25:])
        raise SystemExit(f"pip install {' '.join(packages)} failed (exit {r.returncode}):\n{tail}")
    return py, time.perf_counter() - t0


def sizes(py: Path, *, cwd: Path, env: dict[str, str]) -> tuple[Path, dict[str, dict[str, int | str]]]:
    r = run([str(py), "-c", SIZES], cwd=cwd, env=env, timeout=60)
    if r.returncode:
        raise SystemExit(f"sizing {py} failed:\n{r.stderr}")
    out = json.loads(r.stdout)
    return Path(out["site"]), out["dists"]


def du(path: Path) -> int:
    """Allocated bytes under ``path`` (like ``du -s``), counting hard links once."""
    seen, total = set(), 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


def norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--cold-runs", type=int, default=5, help="cold-start subprocesses after the first")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (prints its path)")
    args = ap.parse_args()
    t_start = time.perf_counter()

    tmp = Path(tempfile.mkdtemp(prefix="edgefleet-footprint-"))
    # Children must import from their venv, never from this source tree or a PYTHONPATH.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    try:
        # 1. The [device] venv, installed from a copy of the repo (the wheel build writes build/ and
        #    *.egg-info into its source folder).
        src = tmp / "src"
        shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
            ".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "node_modules", "tests"))
        for rel in setup_vendor():  # the wheel build copies these from node_modules (setup.py), and refuses without them
            (src / "node_modules" / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / "node_modules" / rel, src / "node_modules" / rel)
        dev_py, dev_s = make_venv(tmp / "device-venv", [f"{src}[device]"], cwd=tmp, env=env)
        dev_site, dev_dists = sizes(dev_py, cwd=tmp, env=env)
        versions = {norm(n): d["version"] for n, d in dev_dists.items()}

        # 2. The anchor: only onnxruntime and numpy, at the versions the device venv got.
        anchor_pkgs = [f"onnxruntime=={versions['onnxruntime']}", f"numpy=={versions['numpy']}"]
        anc_py, anc_s = make_venv(tmp / "anchor-venv", anchor_pkgs, cwd=tmp, env=env)
        anc_site, anc_dists = sizes(anc_py, cwd=tmp, env=env)

        dev_total, anc_total = du(dev_site), du(anc_site)
        dev_tool = sum(int(d["bytes"]) for n, d in dev_dists.items() if norm(n) in VENV_TOOLING)
        anc_tool = sum(int(d["bytes"]) for n, d in anc_dists.items() if norm(n) in VENV_TOOLING)
        print(f"fresh venvs from {Path(sys.executable).resolve()} (Python {sys.version.split()[0]}); "
              f"[device] venv built+installed in {dev_s:.0f}s, anchor in {anc_s:.0f}s")
        print(f"\ninstalled size of site-packages (du, 1 MB = 2^20 bytes)      {'total MB':>8} {'w/o pip+setuptools':>18}")
        print(f"{'ours: pip install edgefleet[device]':60} {dev_total / MB:8.1f} {(dev_total - dev_tool) / MB:18.1f}")
        print(f"{'anchor: onnxruntime + numpy only':60} {anc_total / MB:8.1f} {(anc_total - anc_tool) / MB:18.1f}")
        print(f"{'ours vs onnxruntime+numpy':60} {dev_total / anc_total:7.2f}x {(dev_total - dev_tool) / (anc_total - anc_tool):17.2f}x"
              f"   (+{(dev_total - anc_total) / MB:.1f} MB)")
        print("\nlargest 8 distributions in the [device] venv (files in their RECORD):")
        ranked = sorted(dev_dists.items(), key=lambda kv: -int(kv[1]["bytes"]))
        for name, d in ranked[:8]:
            tag = "  (venv tooling)" if norm(name) in VENV_TOOLING else ("" if norm(name) in {norm(n) for n in anc_dists} else "  (not in anchor)")
            print(f"  {name + ' ' + str(d['version']):34} {int(d['bytes']) / MB:7.1f} MB{tag}")
        rest = ranked[8:]
        print(f"  {'the other ' + str(len(rest)) + ' together':34} {sum(int(d['bytes']) for _, d in rest) / MB:7.1f} MB"
              f"  ({', '.join(n for n, _ in rest)})")

        installed = {norm(n) for n in dev_dists}
        bad = [n for n in FORBIDDEN if norm(n) in installed]
        # Belt and braces: a top-level module of that name, whoever installed it.
        for mod in ("tensorflow", "sklearn", "flask", "skl2onnx", "pandas", "torch"):
            if (dev_site / mod).exists() and mod not in bad:
                bad.append(mod)
        also = [n for n in ALSO_NOT_WANTED if norm(n) in installed]
        print(f"\nforbidden in [device] ({', '.join(FORBIDDEN)}): "
              + ("none installed -> PASS" if not bad else f"INSTALLED: {', '.join(bad)} -> FAIL"))
        print(f"other compiler/server/PMML deps ({', '.join(ALSO_NOT_WANTED)}): "
              + ("none installed -> PASS" if not also else f"INSTALLED: {', '.join(also)} -> FAIL"))
        print("[device] venv holds: " + ", ".join(f"{n} {d['version']}" for n, d in sorted(dev_dists.items(), key=lambda kv: kv[0].lower())))

        # 3. A signed bundle, compiled with this (main) venv, and the records to score.
        import numpy as np
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from train_churn import make_pipeline

        from compiler import compile as compile_model
        from edgefleet_cli.samples.telco_churn import CATEGORICAL, LABEL, NUMERIC, make_telco_churn

        df = make_telco_churn(6000, seed=7)
        split = int(len(df) * 0.7)
        train, holdout = df.iloc[:split], df.iloc[split:].reset_index(drop=True)
        model = make_pipeline("rf").fit(train[CATEGORICAL + NUMERIC], train[LABEL])
        key = Ed25519PrivateKey.generate()
        res = compile_model(model, holdout, targets=["onnx"], name="churn-rf", version=1,
                            private_key=key, label=LABEL, out_dir=tmp / "bundle")
        assert res.archive is not None
        pub = tmp / "public.pem"
        pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        names = [f["name"] for f in res.manifest["input_schema"]["fields"]]
        scoring = make_telco_churn(args.records, seed=11)[names]
        data = tmp / "records.jsonl"
        with open(data, "w") as fh:
            for rec in scoring.to_dict("records"):
                fh.write(json.dumps({k: (None if isinstance(v, float) and v != v else v) for k, v in rec.items()}) + "\n")
        want_mean = float(np.mean(model.predict_proba(scoring)[:, 1]))
        print(f"\nbundle: RandomForest(100) churn, {Path(res.archive).stat().st_size / MB:.1f} MB archive "
              f"(onnx {res.manifest['artifacts'][0]['size'] / MB:.1f} MB), compiled with the main venv")

        # 4. Cold start: a new interpreter in the device venv, import + verify + load the bundle.
        #    Anchors in the same run: a bare interpreter, and `import onnxruntime, numpy` in the anchor venv.
        cold = f"from runtimes.python import Scorer; Scorer.from_bundle({str(res.archive)!r}, {str(pub)!r})"

        def timed(py: Path, code: str) -> float:
            t0 = time.perf_counter()
            r = run([str(py), "-c", code], cwd=tmp, env=env, timeout=60)
            dt = time.perf_counter() - t0
            if r.returncode:
                raise SystemExit(f"{py} -c {code!r} failed:\n{r.stderr}")
            return dt * 1e3

        first = timed(dev_py, cold)
        cases = {"ours": (dev_py, cold), "bare": (anc_py, "pass"), "ort": (anc_py, "import onnxruntime, numpy")}
        times: dict[str, list[float]] = {k: [] for k in cases}
        for i in range(args.cold_runs):  # interleaved, so load drifts hit all three alike
            for k in list(cases)[i % 3:] + list(cases)[:i % 3]:
                times[k].append(timed(*cases[k]))
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"\ncold start, wall clock of a subprocess (median of {args.cold_runs}; first run {first:.0f} ms):")
        labels = {"ours": "ours: from runtimes.python import Scorer; Scorer.from_bundle(...)",
                  "ort": 'anchor: python -c "import onnxruntime, numpy" (anchor venv)',
                  "bare": "anchor: python -c pass"}
        print(f"  {labels['ours']:70} {med['ours']:6.0f} ms")
        print(f"  {labels['ort']:70} {med['ort']:6.0f} ms   -> ours {med['ours'] / med['ort']:.2f}x (+{med['ours'] - med['ort']:.0f} ms)")
        print(f"  {labels['bare']:70} {med['bare']:6.0f} ms")

        # 5. RSS while scoring, with a staged breakdown of the start-up.
        r = run([str(dev_py), "-c", CHILD, str(res.archive), str(pub), str(data)], cwd=tmp, env=env, timeout=120)
        if r.returncode:
            raise SystemExit(f"scoring in the device venv failed:\n{r.stderr}")
        m = json.loads(r.stdout)
        if not m["runtimes_file"].startswith(str(tmp / "device-venv")):
            raise SystemExit(f"the child imported runtimes from {m['runtimes_file']}, not from the device venv")
        ok = abs(m["mean_p"] - want_mean) < 1e-5
        print(f"\nin the device venv (runtimes from site-packages, backend {m['backend']}), elapsed since interpreter start:")
        print(f"  import numpy {m['numpy_ms']:.0f} ms -> onnxruntime {m['onnxruntime_ms']:.0f} ms -> cryptography "
              f"{m['cryptography_ms']:.0f} ms -> runtimes.python {m['import_ms']:.0f} ms -> Scorer.from_bundle {m['load_ms']:.0f} ms")
        kb = 1024
        print(f"  RSS: interpreter {m['start_rss_kb'] / kb:.0f} MB, after imports {m['import_rss_kb'] / kb:.0f} MB, "
              f"bundle loaded {m['load_rss_kb'] / kb:.0f} MB, + {m['n']} records in memory {m['records_rss_kb'] / kb:.0f} MB")
        print(f"  scoring {m['n']:,} records one by one with score(): {m['score_s']:.2f}s "
              f"({m['score_s'] / m['n'] * 1e6:.0f} us/record); RSS after {m['score_rss_kb'] / kb:.0f} MB, "
              f"peak (VmHWM) {m['peak_rss_kb'] / kb:.0f} MB")
        print(f"  mean probability {m['mean_p']:.6f} vs sklearn {want_mean:.6f}: {'match' if ok else 'MISMATCH'}")
        print(f"\ntotal bench time {time.perf_counter() - t_start:.0f}s")
        if bad or also or not ok:
            raise SystemExit(1)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
