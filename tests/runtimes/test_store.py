"""Model store: every refusal leaves the previous model scoring; SIGKILL at any point is survivable."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from edgefleet.bundle_format import canonical_json, open_bundle, pack
from runtimes.python.errors import HealthCheckError, InstallError, RollbackRefusedError
from runtimes.python.store import ModelStore

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def store(tmp_path: Path, keypair: dict[str, Any], make_bundle: Callable[..., Path]) -> ModelStore:
    s = ModelStore(tmp_path / "device", keypair["public"])
    s.install(make_bundle(1))
    return s


def _still_scores(store: ModelStore, version: int) -> None:
    reopened = ModelStore(store.root, store.trusted_keys)
    scorer = reopened.load_active()
    assert scorer is not None and scorer.version == version
    assert scorer.check_canaries() == []


def _repack(path: Path, out: Path, change: Callable[[dict[str, bytes]], None]) -> Path:
    files = dict(open_bundle(path).files)
    change(files)
    out.write_bytes(pack(files))
    return out


def test_install_upgrade_and_previous_slot(store: ModelStore, make_bundle: Callable[..., Path]) -> None:
    res = store.install(make_bundle(2))
    assert res.version == 2 and res.previous_version == 1 and res.scorer is not None
    assert store.state()["previous_version"] == 1
    _still_scores(store, 2)
    assert store.rollback().version == 1
    _still_scores(store, 1)


def test_tampered_artifact_is_refused(store: ModelStore, make_bundle: Callable[..., Path], tmp_path: Path) -> None:
    def flip(files: dict[str, bytes]) -> None:
        data = bytearray(files["artifacts/model.onnx"])
        data[100] ^= 0xFF
        files["artifacts/model.onnx"] = bytes(data)

    bad = _repack(make_bundle(2), tmp_path / "tampered.tar", flip)
    with pytest.raises(InstallError, match="model.onnx.*sha256"):
        store.install(bad)
    _still_scores(store, 1)


def test_bad_signature_is_refused(store: ModelStore, make_bundle: Callable[..., Path], tmp_path: Path) -> None:
    def edit(files: dict[str, bytes]) -> None:
        m = json.loads(files["manifest.json"])
        m["output"]["threshold"] = 0.01
        files["manifest.json"] = canonical_json(m)

    with pytest.raises(InstallError, match="signature does not match"):
        store.install(_repack(make_bundle(2), tmp_path / "resigned.tar", edit))
    _still_scores(store, 1)


def test_lower_version_is_refused_unless_ordered(store: ModelStore, make_bundle: Callable[..., Path]) -> None:
    store.install(make_bundle(3))
    with pytest.raises(RollbackRefusedError, match="active version is v3"):
        store.install(make_bundle(2))
    with pytest.raises(RollbackRefusedError):
        store.install(make_bundle(3, name="other-v3.tar", edit=lambda m: m.update(created_at="2026-11-02T00:00:00Z")))
    _still_scores(store, 3)
    assert store.install(make_bundle(2), allow_downgrade=True).version == 2  # a signed rollback order
    _still_scores(store, 2)


def test_path_traversal_member_is_refused(store: ModelStore, make_bundle: Callable[..., Path], tmp_path: Path) -> None:
    good = open_bundle(make_bundle(2)).files
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        for name, data in [*good.items(), ("../../escaped.txt", b"pwned")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(InstallError, match="unsafe path"):
        store.install(evil)
    assert not (tmp_path / "escaped.txt").exists() and not (store.root.parent / "escaped.txt").exists()
    _still_scores(store, 1)


def test_archive_over_the_limit_is_refused(tmp_path: Path, keypair: dict[str, Any], make_bundle: Callable[..., Path]) -> None:
    small = ModelStore(tmp_path / "small", keypair["public"], max_bundle_bytes=10_000_000)
    small.install(make_bundle(1))
    small.max_bundle_bytes = 2_000
    with pytest.raises(InstallError, match="over this device's limit of 2000"):
        small.install(make_bundle(2))
    _still_scores(small, 1)


def test_truncated_download_is_refused(store: ModelStore, make_bundle: Callable[..., Path], tmp_path: Path) -> None:
    data = make_bundle(2).read_bytes()
    for cut in (100, len(data) // 3, 2 * len(data) // 3):  # (the tar end padding alone carries no content)
        partial = tmp_path / f"cut{cut}.tar"
        partial.write_bytes(data[:cut])
        with pytest.raises(InstallError):
            store.install(partial)
    _still_scores(store, 1)


def test_failed_health_check_reverts(store: ModelStore, make_bundle: Callable[..., Path]) -> None:
    def poison(m: dict[str, Any]) -> None:
        for row in m["canary"]["rows"]:
            row["probabilities"] = [0.5, 0.5]

    with pytest.raises(HealthCheckError, match="v2 failed its health check.*kept v1 active"):
        store.install(make_bundle(2, edit=poison))
    _still_scores(store, 1)
    assert len(list(store.slots.iterdir())) == 1, "the unhealthy slot is removed"


def test_corrupted_active_slot_falls_back_to_previous(store: ModelStore, make_bundle: Callable[..., Path]) -> None:
    store.install(make_bundle(2))
    active = store.slots / store.state()["active"] / "artifacts" / "model.onnx"
    active.write_bytes(active.read_bytes()[:-1] + b"\x00")
    reopened = ModelStore(store.root, store.trusted_keys)
    scorer = reopened.load_active()
    assert scorer is not None and scorer.version == 1
    assert "failed verification on load" in (reopened.last_error or "")


CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    from edgefleet import keys
    from runtimes.python.store import ModelStore
    from runtimes.python.errors import RollbackRefusedError
    store = ModelStore(sys.argv[1], keys.load_public_key(sys.argv[2]))
    print("ready", flush=True)
    for path in sys.argv[3:]:
        try:
            store.install(path)
        except RollbackRefusedError:
            pass
    print("done", flush=True)
    """
)


def test_sigkill_during_install_always_restarts_on_a_verified_model(tmp_path: Path, keypair: dict[str, Any], make_bundle: Callable[..., Path]) -> None:
    root = tmp_path / "device"
    ModelStore(root, keypair["public"]).install(make_bundle(1))
    per_round = 12
    bundles = [str(make_bundle(v)) for v in range(2, 2 + 30 * per_round)]
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(root=str(ROOT)))
    rng = random.Random(1234)
    versions_seen = set()
    kills = 0
    for round_ in range(30):
        batch = bundles[round_ * per_round:(round_ + 1) * per_round]
        proc = subprocess.Popen([sys.executable, str(script), str(root), str(keypair["public_path"]), *batch],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.15))  # an install takes ~10-30 ms: kills land in every phase
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
        store = ModelStore(root, keypair["public"])
        scorer = store.load_active()
        assert scorer is not None, f"no model after kill {kills}: {store.last_error}"
        assert scorer.check_canaries() == []
        versions_seen.add(scorer.version)
        assert not any((root / "tmp").iterdir()), "staging is cleaned on open"
        assert len(list((root / "slots").iterdir())) <= 2, "only active and previous slots survive a restart"
    assert kills >= 20
    assert max(versions_seen) > 5, f"installs made progress between kills: {sorted(versions_seen)}"
