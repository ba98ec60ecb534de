"""Build hook: copy what the server serves from outside its package into ``fleet_server/_static`` of the wheel.

    _static/demo/      web_demo/*
    _static/runtime/   runtimes/js/*.mjs
    _static/vendor/    the node_modules files /demo and /dashboard serve (same relative paths) + licenses

An editable install skips the copy: the server then falls back to the checkout (fleet_server/api/static.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
VENDOR = [  # keep in step with VENDOR in fleet_server/api/demo.py and dashboard.py
    "onnxruntime-web/dist/ort.wasm.min.mjs",
    "onnxruntime-web/dist/ort-wasm-simd-threaded.mjs",
    "onnxruntime-web/dist/ort-wasm-simd-threaded.wasm",
    "onnxruntime-web/package.json",  # licence: MIT (the package ships no LICENSE file)
    "@tensorflow/tfjs/dist/tf.fesm.min.js",
    "@tensorflow/tfjs/package.json",  # licence: Apache-2.0
    "chart.js/dist/chart.umd.min.js",
    "chart.js/LICENSE.md",
]


class BuildWithStatic(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        out = Path(self.build_lib) / "fleet_server" / "_static"
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(HERE / "web_demo", out / "demo")
        (out / "runtime").mkdir(parents=True)
        for f in sorted((HERE / "runtimes" / "js").glob("*.mjs")):
            shutil.copy2(f, out / "runtime" / f.name)
        missing = [rel for rel in VENDOR if not (HERE / "node_modules" / rel).is_file()]
        if missing:
            raise SystemExit(f"setup.py: node_modules lacks {', '.join(missing)}: run `npm ci` (make does it) before building the wheel")
        for rel in VENDOR:
            dest = out / "vendor" / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(HERE / "node_modules" / rel, dest)


setup(cmdclass={"build_py": BuildWithStatic})
