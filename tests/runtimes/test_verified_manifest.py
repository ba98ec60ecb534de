"""A verified manifest is a type only verification makes: verify() returns one, a dict cannot be
wrapped into one, the scorer refuses a dict at run time and mypy refuses it before that, and it
cannot be changed in place."""

from __future__ import annotations

import copy
import json
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edgefleet.bundle_format import canonical_json, open_bundle, pack, verify
from edgefleet.manifest import VerifiedManifest
from runtimes.python.scorer import Scorer

ROOT = Path(__file__).resolve().parents[2]


def test_verify_returns_a_verified_manifest_with_typed_fields(lr_result: Any, keypair: dict[str, Any], tmp_path: Path) -> None:
    archive = tmp_path / "b.tar"
    archive.write_bytes(pack(lr_result.files))
    manifest = verify(open_bundle(archive), keypair["public"])
    assert isinstance(manifest, VerifiedManifest) and manifest == lr_result.manifest
    assert isinstance(lr_result.manifest, VerifiedManifest)  # the compiler verifies what it signed
    m = lr_result.manifest
    assert (m.name, m.version) == (m["name"], m["version"])
    assert m.fields == m["input_schema"]["fields"] and m.threshold == m["output"]["threshold"]
    assert m.formats == [a["format"] for a in m["artifacts"]]
    assert json.loads(canonical_json(m)) == m.to_dict()


def test_an_unverified_dict_cannot_be_wrapped_or_scored(lr_result: Any) -> None:
    raw = lr_result.manifest.to_dict()
    with pytest.raises(TypeError, match="comes from edgefleet.bundle_format.verify"):
        VerifiedManifest(raw)
    with pytest.raises(TypeError, match="needs a VerifiedManifest"):
        Scorer(raw, lr_result.files)  # type: ignore[arg-type]
    assert Scorer(lr_result.manifest, lr_result.files).check_canaries() == []


def test_it_is_read_only_and_copies_are_plain_dicts(lr_result: Any) -> None:
    m = lr_result.manifest
    for change in (lambda: m.__setitem__("version", 99), lambda: m.update(version=99), lambda: m.pop("version"),
                   lambda: m.setdefault("x", 1), lambda: m.clear(), lambda: m.__delitem__("name")):
        with pytest.raises(TypeError, match="read-only"):
            change()
    assert m["version"] == lr_result.manifest.version
    for c in (copy.copy(m), copy.deepcopy(m), pickle.loads(pickle.dumps(m)), m.to_dict()):
        assert type(c) is dict and c == m  # a copy never claims to be verified
        c["version"] = 99
    assert m["version"] != 99


def test_mypy_refuses_a_dict_where_a_verified_manifest_is_needed(tmp_path: Path) -> None:
    snippet = tmp_path / "snippet.py"
    snippet.write_text("from runtimes.python.scorer import Scorer\n"
                       "def f(files: dict[str, bytes]) -> None:\n"
                       "    Scorer({'name': 'x'}, files)\n")
    out = subprocess.run([sys.executable, "-m", "mypy", "--follow-imports=silent", "--ignore-missing-imports", str(snippet)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and "VerifiedManifest" in out.stdout, out.stdout + out.stderr
