"""Device-runtime fixtures: real signed bundles at any version, written as archives."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

from compiler.bundle import bundle_files
from edgefleet.bundle_format import canonical_json, pack


@pytest.fixture(scope="session")
def lr_result(train_model: Any, churn_data: dict[str, Any], keypair: dict[str, Any]) -> Any:
    from compiler import compile

    return compile(train_model("lr"), churn_data["holdout"], targets=["onnx"], name="churn", version=1,
                   private_key=keypair["private"], label="Churn", created_at="2026-11-01T00:00:00Z")


@pytest.fixture()
def make_bundle(lr_result: Any, keypair: dict[str, Any], tmp_path: Path) -> Callable[..., Path]:
    """make_bundle(version, edit=None) -> path of a correctly signed .tar for that version.

    ``edit(manifest)`` may change the manifest before signing (e.g. break the canary rows), so
    the bundle is validly signed but unhealthy.
    """

    def make(version: int, edit: Callable[[dict[str, Any]], None] | None = None, name: str | None = None) -> Path:
        manifest = json.loads(canonical_json(lr_result.manifest))
        manifest["version"] = version
        if edit:
            edit(manifest)
        arts = {k: v for k, v in lr_result.files.items() if k.startswith("artifacts/")}
        files = bundle_files(manifest, [], keypair["private"])
        files.update(arts)
        out = tmp_path / (name or f"churn-v{version}.tar")
        out.write_bytes(pack(files))
        return out

    return make
