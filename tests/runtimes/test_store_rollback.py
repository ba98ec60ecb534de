"""ModelStore.rollback() passes the install gate: the previous slot is verified from disk and its
canary rows are replayed; a slot that no longer reproduces them is refused and v2 keeps scoring.
Real signed bundles, real onnxruntime, real files."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgefleet.bundle_format import open_bundle
from runtimes.python.errors import HealthCheckError, InstallError
from runtimes.python.store import ModelStore


@pytest.fixture()
def store_v1_v2(tmp_path: Path, keypair: dict[str, Any], make_bundle: Callable[..., Path]) -> ModelStore:
    s = ModelStore(tmp_path / "device", keypair["public"])
    s.install(make_bundle(1))
    s.install(make_bundle(2))
    return s


def _canary_rows(store: ModelStore, slot: str) -> int:
    return len(open_bundle(store.slots / slot).manifest["canary"]["rows"])


def test_good_rollback_replays_the_previous_slots_canaries(store_v1_v2: ModelStore, caplog: pytest.LogCaptureFixture) -> None:
    store = store_v1_v2
    prev = store.state()["previous"]
    assert store.last_health_check is not None and store.last_health_check["slot"] != prev  # the v2 install's check
    caplog.set_level(logging.INFO, logger="runtimes.python.store")
    scorer = store.rollback()
    assert scorer.version == 1 and store.active_version == 1 and store.state()["previous_version"] == 2
    rows = _canary_rows(store, prev)
    assert rows > 0
    assert store.last_health_check == {"slot": prev, "verified": True, "version": 1, "canaries": rows, "failures": []}
    messages = [r.getMessage() for r in caplog.records if r.name == "runtimes.python.store"]
    assert f"canary check of churn v1 passed: {rows} row(s) replayed" in messages
    assert any(m.startswith("rolled back from v2 to v1") for m in messages)
    assert ModelStore(store.root, store.trusted_keys).load_active().version == 1  # type: ignore[union-attr]


def test_rollback_to_a_slot_whose_canaries_fail_is_refused(store_v1_v2: ModelStore, make_bundle: Callable[..., Path],
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """The previous slot holds a bundle signed by the trusted publisher, so it verifies, but its
    canary rows no longer reproduce on this device (as after a runtime upgrade changed the
    numerics): rollback must replay them, refuse, and leave v2 active and scoring."""
    store = store_v1_v2
    prev = store.state()["previous"]

    def drift(m: dict[str, Any]) -> None:
        for row in m["canary"]["rows"]:
            row["probabilities"] = [0.5, 0.5]

    for name, data in open_bundle(make_bundle(1, edit=drift, name="v1-drifted.tar")).files.items():
        (store.slots / prev / name).write_bytes(data)
    caplog.set_level(logging.INFO, logger="runtimes.python.store")
    with pytest.raises(HealthCheckError, match=rf"rollback to {prev} refused: its health check failed: canary 0: .*kept v2 active"):
        store.rollback()
    assert store.active_version == 2 and store.state()["previous"] == prev
    assert store.last_health_check is not None and store.last_health_check["slot"] == prev
    assert store.last_health_check["verified"] and len(store.last_health_check["failures"]) == _canary_rows(store, prev)
    assert any(r.levelno == logging.ERROR and "rollback to" in r.getMessage() for r in caplog.records)
    reopened = ModelStore(store.root, store.trusted_keys).load_active()
    assert reopened is not None and reopened.version == 2 and reopened.check_canaries() == []


def test_rollback_to_a_slot_that_fails_verification_raises_the_stores_error(store_v1_v2: ModelStore) -> None:
    """A flipped artifact byte is a BundleError inside the contract; it leaves as InstallError."""
    store = store_v1_v2
    prev = store.state()["previous"]
    art = store.slots / prev / "artifacts" / "model.onnx"
    data = bytearray(art.read_bytes())
    data[100] ^= 0xFF
    art.write_bytes(bytes(data))
    with pytest.raises(InstallError, match=rf"the previous model {prev} failed verification: .*sha256") as info:
        store.rollback()
    assert type(info.value) is InstallError  # not a BundleError, not a HealthCheckError
    assert store.active_version == 2
    assert store.last_health_check is not None and store.last_health_check["verified"] is False


def test_rollback_without_a_previous_slot(tmp_path: Path, keypair: dict[str, Any], make_bundle: Callable[..., Path]) -> None:
    store = ModelStore(tmp_path / "device", keypair["public"])
    store.install(make_bundle(1))
    with pytest.raises(InstallError, match="no previous model"):
        store.rollback()


def test_slot_names_are_what_the_module_docstring_says(store_v1_v2: ModelStore) -> None:
    import hashlib
    import re

    import runtimes.python.store as store_module

    assert "slots/<name>-v<version>-<sha12>/" in (store_module.__doc__ or "")
    for slot in (store_v1_v2.state()["active"], store_v1_v2.state()["previous"]):
        name, version, sha12 = re.fullmatch(r"(.+)-v(\d+)-([0-9a-f]{12})", slot).groups()  # type: ignore[union-attr]
        bundle = open_bundle(store_v1_v2.slots / slot)
        assert (name, int(version), sha12) == (bundle.manifest["name"], bundle.manifest["version"],
                                               hashlib.sha256(bundle.manifest_bytes).hexdigest()[:12])
