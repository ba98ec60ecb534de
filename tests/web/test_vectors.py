"""The shared vectors: Python's encoder still writes what is committed, and the JS runtime
(runtimes/js, in Node) reproduces every case, verifies the real bundle and scores it with TF.js."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.web import vectors as vec
from tests.web.conftest import ROOT, require_browser_tools

COMMITTED = ROOT / "tests" / "vectors" / "churn.json"
NODE_CHECK = ROOT / "runtimes" / "js" / "test" / "vectors.mjs"


def test_committed_encoding_vectors_are_what_python_computes(web_bundle: dict[str, Any]) -> None:
    committed = json.loads(COMMITTED.read_text())
    assert committed["schemas"]["churn"] == web_bundle["result"].manifest["input_schema"]["fields"]
    for case in committed["encoding"]:
        fields = committed["schemas"][case["schema"]]
        fresh = vec._case(case["schema"], fields, case["records"], case["about"])
        assert fresh == case, f"{case['about']}: regenerate with `python -m tests.web.vectors` and rerun the JS checks"


def _node_check(*args: str) -> dict[str, Any]:
    node = require_browser_tools()
    proc = subprocess.run([node, str(NODE_CHECK), *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"no result from {NODE_CHECK.name} (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(lines[-1])


def test_js_runtime_reproduces_committed_vectors() -> None:
    r = _node_check(str(COMMITTED))
    assert r["failures"] == [] and r["encoding_cases"] == len(json.loads(COMMITTED.read_text())["encoding"])


def test_js_runtime_verifies_and_scores_the_real_bundle_in_node(web_bundle: dict[str, Any], web_vectors: Path, keypair: dict[str, Any]) -> None:
    r = _node_check(str(web_vectors), str(web_bundle["dir"]), str(keypair["public_path"]))
    assert r["failures"] == [], r["failures"]
    assert r["tfjs_node_max_abs_diff"] <= 1e-6
