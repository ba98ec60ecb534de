"""The Kotlin SDK (runtimes/kotlin) inside `make test`: kotlinc-compiled tests run on the JDK.

* the encoder reproduces every shared vector bit for bit (tests/vectors/churn.json, error texts
  included, and the TFLite packing in tests/vectors/tflite.json, which must be current);
* verification refuses a flipped artifact byte, a changed manifest field, a wrong key, an
  unlisted file, a cut archive; its messages equal edgefleet.bundle_format's on the same files;
* the model store (A/B, anti-rollback with signed rollback, atomic writes, canary revert)
  replays canaries through ai-edge-litert's real Interpreter.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Callable

from edgefleet import keys
from edgefleet.bundle_format import canonical_json, open_bundle, pack, verify
from edgefleet.errors import BundleError
from tests.kotlin.build import ROOT
from tests.kotlin.conftest import PYTHON, WORKER, poison_canaries
from tests.kotlin.make_vectors import OUT, build, text

VECTORS = ROOT / "tests" / "vectors"


def test_tflite_packing_vectors_are_current() -> None:
    assert OUT.read_text() == text(build()), "tests/vectors/tflite.json is stale: run python -m tests.kotlin.make_vectors"


def test_kotlin_encoder_reproduces_every_vector(kotlin: Any) -> None:
    out = kotlin("vectors", str(VECTORS)).stdout
    n_cases = len(json.loads((VECTORS / "churn.json").read_text())["encoding"])
    assert out.count("PASS vector ") == n_cases and "PASS every packing case was checked" in out


def test_kotlin_verification_refuses_tampering(kotlin: Any, make_tflite_bundle: Callable[..., Path], keypair: dict[str, Any], tmp_path: Path) -> None:
    out = kotlin("tamper", str(make_tflite_bundle(1)), str(keypair["public_path"]), str(tmp_path)).stdout
    for name in ("a flipped artifact byte", "a changed manifest field", "a key that is not trusted", "a signature by another key",
                 "a file the signed manifest does not list", "a cut archive", "a slim bundle"):
        assert f"PASS {name}" in out


def _resign(files: dict[str, bytes], manifest: dict[str, Any], private: Any) -> dict[str, bytes]:
    data = canonical_json(manifest)
    return {**files, "manifest.json": data, "signature": base64.b64encode(keys.sign(private, data)) + b"\n"}


def test_kotlin_verification_messages_equal_python(kotlin: Any, make_tflite_bundle: Callable[..., Path], keypair: dict[str, Any],
                                                   tmp_path: Path) -> None:
    good = make_tflite_bundle(1)
    files = dict(open_bundle(good).files)
    manifest = json.loads(files["manifest.json"])
    art = next(k for k in files if k.endswith(".tflite"))
    variants: dict[str, dict[str, bytes]] = {"good": files}
    variants["flipped"] = {**files, art: files[art][:100] + bytes([files[art][100] ^ 1]) + files[art][101:]}
    variants["shorter"] = {**files, art: files[art][:-1]}
    variants["edited"] = {**files, "manifest.json": files["manifest.json"].replace(b'"version":1', b'"version":2')}
    variants["unlisted"] = {**files, "notes.txt": b"hi"}
    variants["slim"] = {k: v for k, v in files.items() if not k.endswith(".onnx")}
    variants["none"] = {k: v for k, v in files.items() if not k.startswith("artifacts/")}
    variants["bad-format"] = _resign(files, {**manifest, "format_version": 2}, keypair["private"])
    variants["schema"] = _resign(files, {**manifest, "task": "regression"}, keypair["private"])
    variants["no-canary"] = _resign(files, {k: v for k, v in manifest.items() if k != "canary"}, keypair["private"])
    edits: dict[str, Callable[[dict[str, Any]], None]] = {
        "field-type": lambda m: m["input_schema"]["fields"][0].update(type="text"),
        "sha-in-manifest": lambda m: m["artifacts"][1].update(sha256="0" * 64),
        "canary-width": lambda m: m["canary"]["rows"][0].update(probabilities=[1.0]),
    }
    for name, edit in edits.items():
        m = json.loads(files["manifest.json"])
        edit(m)
        variants[name] = _resign(files, m, keypair["private"])
    paths = []
    for name, fs in variants.items():
        p = tmp_path / f"{name}.tar"
        p.write_bytes(pack(fs))
        paths.append(p)
    for mode in ("full", "partial"):
        lines = kotlin("verify-files", str(keypair["public_path"]), mode, *map(str, paths), check=False).stdout.splitlines()
        got = {Path(json.loads(line)["file"]).stem: json.loads(line)["result"] for line in lines}
        for p in paths:
            try:
                m = verify(open_bundle(p), keypair["public"], allow_partial=mode == "partial")
                want = f"OK {m['name']} {m['version']}"
            except BundleError as exc:
                want = f"ERROR {exc}"
            assert got[p.stem] == want, f"{mode} {p.stem}: Kotlin says {got[p.stem]!r}, Python {want!r}"
    assert sum(v.startswith("ERROR") for v in got.values()) >= 10


def test_kotlin_model_store_with_litert_canaries(kotlin: Any, make_tflite_bundle: Callable[..., Path], keypair: dict[str, Any],
                                                 tmp_path: Path) -> None:
    plan = {"root": str(tmp_path / "store"), "pubkey": str(keypair["public_path"]), "python": PYTHON, "worker": str(WORKER),
            "bundles": {"v1": str(make_tflite_bundle(1)), "v2": str(make_tflite_bundle(2)), "v4": str(make_tflite_bundle(4)),
                        "bad": str(make_tflite_bundle(3, edit=poison_canaries, name="churn-v3-bad.tar"))}}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    out = kotlin("store", str(tmp_path / "plan.json")).stdout
    assert "PASS a bundle whose canaries fail is reverted" in out and "PASS a lower version is refused" in out


def test_a_failing_kotlin_check_fails_the_run(kotlin: Any, tmp_path: Path) -> None:
    """The wrappers' contract: one wrong expectation makes the Kotlin run exit 1 with a FAIL line."""
    vectors = json.loads((VECTORS / "churn.json").read_text())
    case = next(c for c in vectors["encoding"] if "error" in c)
    case["error"]["reason"] += "!"
    (tmp_path / "churn.json").write_text(json.dumps(vectors))
    (tmp_path / "tflite.json").write_text((VECTORS / "tflite.json").read_text())
    proc = kotlin("vectors", str(tmp_path), check=False)
    assert proc.returncode == 1 and sum(line.startswith("FAIL") for line in proc.stdout.splitlines()) == 1, proc.stdout[-2000:]
