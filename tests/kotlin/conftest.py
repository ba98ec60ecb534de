"""Kotlin SDK fixtures: one kotlinc build per source state (cached in build/kotlin/<hash>), a real
churn RandomForest compiled to onnx + tflite and signed, and a runner for the Kotlin test groups."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from compiler.bundle import bundle_files
from edgefleet.bundle_format import canonical_json, pack
from tests.kotlin.build import ROOT, build, classpath

JAVA = "java"
WORKER = ROOT / "tests" / "kotlin" / "litert_worker.py"


@pytest.fixture(scope="session")
def kotlin_build() -> dict[str, str]:
    return build()


@pytest.fixture(scope="session")
def kotlin(kotlin_build: dict[str, str]) -> Callable[..., subprocess.CompletedProcess[str]]:
    """kotlin(group, *args, check=True): run a Kotlin test group; a FAIL line or exit != 0 fails the test."""

    def run(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([JAVA, "-Xss4m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-cp", classpath(kotlin_build),
                               "edgefleet.test.MainKt", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        if check:
            fails = [line for line in proc.stdout.splitlines() if line.startswith("FAIL")]
            assert proc.returncode == 0 and not fails, f"Kotlin {args[0]} failed (exit {proc.returncode}):\n" + "\n".join(fails) + \
                f"\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
        return proc

    return run


@pytest.fixture(scope="session")
def tflite_result(train_model: Any, churn_data: dict[str, Any], keypair: dict[str, Any]) -> Any:
    """The churn RandomForest compiled to onnx + tflite (float64 input: the int64-bits tree lowering)."""
    from compiler import compile

    return compile(train_model("rf"), churn_data["holdout"], targets=["onnx", "tflite"], name="churn", version=1,
                   private_key=keypair["private"], label="Churn", created_at="2026-11-01T00:00:00Z")


@pytest.fixture(scope="session")
def make_tflite_bundle(tflite_result: Any, keypair: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """make_tflite_bundle(version, edit=None, name=None) -> a correctly signed .tar (edit may break the canaries)."""
    out_dir = tmp_path_factory.mktemp("kotlin_bundles")

    def make(version: int, edit: Callable[[dict[str, Any]], None] | None = None, name: str | None = None) -> Path:
        manifest = json.loads(canonical_json(tflite_result.manifest))
        manifest["version"] = version
        if edit:
            edit(manifest)
        files = bundle_files(manifest, [], keypair["private"])
        files.update({k: v for k, v in tflite_result.files.items() if k.startswith("artifacts/")})
        out = out_dir / (name or f"churn-v{version}.tar")
        out.write_bytes(pack(files))
        return out

    return make


def poison_canaries(manifest: dict[str, Any]) -> None:
    """A validly signed bundle whose canary rows expect the opposite outcome: it must not go live."""
    for row in manifest["canary"]["rows"]:
        p = row["probabilities"]
        row["probabilities"] = [p[1], p[0]]
        row["label"] = manifest["output"]["classes"][0] if row["label"] == manifest["output"]["classes"][1] else manifest["output"]["classes"][1]


PYTHON = sys.executable
