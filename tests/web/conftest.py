"""Web fixtures: a real churn bundle (onnx + tfjs), its shared vectors, a real fleet server.

Nothing is mocked: the bundle is compiled with the real targets, the vectors come from Python's
encoder and onnxruntime, the server is waitress + SQLite, and the browser is Debian's Chromium.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.web import vectors as vec

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("EDGEFLEET_CHROMIUM", "/usr/bin/chromium")


def require_browser_tools() -> str:
    """node, playwright-core and Chromium, or a failure saying how to get them (never a skip)."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is missing: run `make` (installs nodejs)")
    if not (ROOT / "node_modules" / "playwright-core" / "package.json").is_file():
        pytest.fail("playwright-core is missing: run `make` (npm ci)")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run `make` (apt-get install chromium)")
    return node


@pytest.fixture(scope="session")
def web_bundle(train_model: Any, keypair: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("web_bundle") / "churn-v1"
    result, model, frame = vec.compile_churn(out, keypair["private"], model=train_model("rf"))
    assert result.parity_passed, result.manifest["parity"]
    return {"result": result, "model": model, "frame": frame, "dir": out, "archive": result.archive}


@pytest.fixture(scope="session")
def web_vectors(web_bundle: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = vec.build(web_bundle["result"], web_bundle["model"], web_bundle["frame"])
    return vec.write(data, tmp_path_factory.mktemp("vectors"))
