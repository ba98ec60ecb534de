"""Bundle format: schema-valid manifests, verification, tamper detection, deterministic archive."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from edgefleet import keys
from edgefleet.bundle_format import canonical_json, open_bundle, pack, verify
from edgefleet.errors import BundleError, VerificationError

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "edgefleet" / "schema" / "manifest.schema.json").read_text())


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgefleet_cli.main", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("family", ["lr", "rf", "hgb"])
def test_real_manifests_validate_against_schema(family: str, compiled: Any) -> None:
    manifest = compiled(family).manifest
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    jsonschema.validate(manifest, SCHEMA)
    assert {a["format"] for a in manifest["artifacts"]} == {"onnx", "pmml"}
    assert manifest["reference"]["metrics"]["auroc"] > 0.7
    assert len(manifest["canary"]["rows"]) >= 5


def test_schema_rejects_a_broken_manifest(compiled: Any) -> None:
    manifest = json.loads(json.dumps(compiled("lr").manifest))
    manifest["artifacts"][0]["sha256"] = "not-a-hash"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(manifest, SCHEMA)


def test_manifest_is_stored_canonically(compiled: Any) -> None:
    result = compiled("lr")
    raw = (result.bundle_dir / "manifest.json").read_bytes()
    assert raw == canonical_json(json.loads(raw))


def _copy(result: Any, tmp_path: Path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(result.bundle_dir, dst)
    return dst


def test_verify_accepts_folder_and_archive(compiled: Any, keypair: dict[str, Any]) -> None:
    result = compiled("rf")
    for path in (result.bundle_dir, result.archive):
        manifest = verify(open_bundle(path), keypair["public"])
        assert manifest["name"] == "churn-rf"
    proc = _cli("verify", str(result.archive), "--pubkey", str(keypair["public_path"]))
    assert proc.returncode == 0, proc.stderr
    assert "OK: churn-rf v1" in proc.stdout


def test_one_byte_changed_in_an_artifact_fails(compiled: Any, keypair: dict[str, Any], tmp_path: Path) -> None:
    bundle = _copy(compiled("rf"), tmp_path)
    target = bundle / "artifacts" / "model.onnx"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(VerificationError, match=r"artifacts/model.onnx \(onnx\) sha256 is .* the signed manifest says"):
        verify(open_bundle(bundle), keypair["public"])
    proc = _cli("verify", str(bundle), "--pubkey", str(keypair["public_path"]))
    assert proc.returncode == 1
    assert "edgefleet: error:" in proc.stderr and "model.onnx" in proc.stderr and "sha256" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_truncated_artifact_reports_size(compiled: Any, keypair: dict[str, Any], tmp_path: Path) -> None:
    bundle = _copy(compiled("lr"), tmp_path)
    target = bundle / "artifacts" / "model.pmml"
    target.write_bytes(target.read_bytes()[:-10])
    with pytest.raises(VerificationError, match=r"model.pmml \(pmml\) has \d+ bytes, the signed manifest says"):
        verify(open_bundle(bundle), keypair["public"])


def test_one_field_changed_in_the_manifest_fails(compiled: Any, keypair: dict[str, Any], tmp_path: Path) -> None:
    bundle = _copy(compiled("rf"), tmp_path)
    manifest = json.loads((bundle / "manifest.json").read_bytes())
    manifest["output"]["threshold"] = 0.3
    (bundle / "manifest.json").write_bytes(canonical_json(manifest))
    with pytest.raises(VerificationError, match="signature does not match the manifest"):
        verify(open_bundle(bundle), keypair["public"])
    proc = _cli("verify", str(bundle), "--pubkey", str(keypair["public_path"]))
    assert proc.returncode == 1 and "signature does not match" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_wrong_public_key_fails_and_names_both_keys(compiled: Any, keypair: dict[str, Any], tmp_path: Path) -> None:
    _, other_pub = keys.generate_keypair(tmp_path / "other")
    other = keys.load_public_key(other_pub)
    with pytest.raises(VerificationError, match=rf"manifest names key {keys.key_id(keypair['public'])}, the given public key is {keys.key_id(other)}"):
        verify(open_bundle(compiled("rf").archive), other)
    proc = _cli("verify", str(compiled("rf").archive), "--pubkey", str(other_pub))
    assert proc.returncode == 1 and "the given public key is" in proc.stderr


def test_unlisted_artifact_is_refused(compiled: Any, keypair: dict[str, Any], tmp_path: Path) -> None:
    bundle = _copy(compiled("lr"), tmp_path)
    (bundle / "artifacts" / "extra.onnx").write_bytes(b"x")
    with pytest.raises(VerificationError, match="not listed in the signed manifest: artifacts/extra.onnx"):
        verify(open_bundle(bundle), keypair["public"])


def test_missing_signature_and_garbage_are_clear(tmp_path: Path, compiled: Any) -> None:
    bundle = _copy(compiled("lr"), tmp_path)
    (bundle / "signature").unlink()
    with pytest.raises(BundleError, match="signature file is missing"):
        open_bundle(bundle)
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"this is not a tar archive at all" * 20)
    with pytest.raises(BundleError, match="not a readable bundle archive"):
        open_bundle(junk)
    with pytest.raises(BundleError, match="no such bundle"):
        open_bundle(tmp_path / "nope.tar")


def test_archive_is_deterministic(compiled: Any) -> None:
    result = compiled("gb")
    again = pack(open_bundle(result.archive).files)
    assert again == result.archive.read_bytes()
    assert pack(open_bundle(result.bundle_dir).files) == result.archive.read_bytes()


def test_same_input_same_bundle_bytes(train_model: Any, churn_data: dict[str, Any], keypair: dict[str, Any]) -> None:
    from compiler import compile

    args = dict(targets=["onnx"], name="det", version=3, private_key=keypair["private"], label="Churn", created_at="2026-01-01T00:00:00Z")
    a = compile(train_model("lr"), churn_data["holdout"], **args)  # type: ignore[arg-type]
    b = compile(train_model("lr"), churn_data["holdout"], **args)  # type: ignore[arg-type]
    assert pack(a.files) == pack(b.files)


def test_slim_bundle_verifies_only_with_allow_partial(compiled: Any, keypair: dict[str, Any]) -> None:
    from edgefleet.bundle_format import Bundle, slim

    full = open_bundle(compiled("lr").archive)
    files = slim(full.files, full.manifest, {"onnx"})
    assert "artifacts/model.pmml" not in files and "artifacts/model.onnx" in files
    part = Bundle("slim", files["manifest.json"], full.signature, files)
    with pytest.raises(BundleError, match="model.pmml is missing"):
        verify(part, keypair["public"])
    assert verify(part, keypair["public"], allow_partial=True)["name"] == "churn-lr"
    empty = Bundle("empty", files["manifest.json"], full.signature, {k: v for k, v in files.items() if not k.startswith("artifacts/")})
    with pytest.raises(BundleError, match="carries none of the artifacts"):
        verify(empty, keypair["public"], allow_partial=True)
