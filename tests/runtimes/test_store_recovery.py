"""Device state: a torn, missing or edited state.json, a lost floor file, a flipped active artifact.

Each case starts from a real store with verified v1 and v2 slots, damages what is on disk the
way a power cut or a careless operator would, reopens the store, and checks that the device is
on the highest verified version, still refuses a downgrade, kept every verified slot, and says
what happened.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

from runtimes.python.errors import RollbackRefusedError
from runtimes.python.store import ModelStore


@pytest.fixture()
def store(tmp_path: Path, keypair: dict[str, Any], make_bundle: Callable[..., Path]) -> ModelStore:
    s = ModelStore(tmp_path / "device", keypair["public"])
    s.install(make_bundle(1))
    s.install(make_bundle(2))
    assert s.floor == 2 and s.active_version == 2
    return s


def _slots(store: ModelStore) -> list[str]:
    return sorted(p.name for p in store.slots.iterdir())


def _v1_slot(store: ModelStore) -> str:
    return next(n for n in _slots(store) if "-v1-" in n)


def _edit(**changes: Any) -> Callable[[ModelStore], None]:
    def apply(store: ModelStore) -> None:
        state = json.loads(store.state_path.read_bytes())
        state.update(changes)
        store.state_path.write_text(json.dumps(state))
    return apply


DAMAGE: dict[str, Callable[[ModelStore], None]] = {
    "torn": lambda s: s.state_path.write_text('{"active": "churn-v2-448e'),
    "missing": lambda s: s.state_path.unlink(),
    "empty": lambda s: s.state_path.write_bytes(b""),
    "not-an-object": lambda s: s.state_path.write_text("[1, 2, 3]"),
    "null": lambda s: s.state_path.write_text("null"),
    "binary": lambda s: s.state_path.write_bytes(b"\xff\xfe\x00garbage"),
    "active_version-string": _edit(active_version="2"),
    "active_version-zero": _edit(active_version=0),
    "active_version-negative": _edit(active_version=-3),
    "active_version-bool": _edit(active_version=True),
    "active_version-disagrees-with-slot": _edit(active_version=7),
    "active-slot-gone": _edit(active="churn-v2-000000000000"),
    "active-not-a-string": _edit(active={"x": 1}),
    "active-null": _edit(active=None, active_version=None, previous=None, previous_version=None),
    "floor-string": _edit(floor="9"),
    "edited-down-to-v1": lambda s: s.state_path.write_text(json.dumps({"active": _v1_slot(s), "active_version": 1, "previous": None})),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_bad_state_is_rebuilt_from_the_verified_slots(store: ModelStore, make_bundle: Callable[..., Path], damage: str) -> None:
    before = _slots(store)
    DAMAGE[damage](store)
    reopened = ModelStore(store.root, store.trusted_keys)  # must not raise, must not wipe
    assert _slots(reopened) == before, "no verified slot is deleted because the state was unreadable"
    scorer = reopened.load_active()
    assert scorer is not None and scorer.version == 2, "the device comes up on the highest verified version"
    assert scorer.check_canaries() == []
    assert reopened.active_version == 2 and reopened.floor == 2
    assert reopened.recovery is not None and reopened.recovery["rebuilt_from"] == [2, 1], reopened.recovery
    assert reopened.recovery["reason"], "the rebuild says why"
    with pytest.raises(RollbackRefusedError):
        reopened.install(make_bundle(1, name="v1-again.tar"))
    assert reopened.install(make_bundle(3)).version == 3, "installs go on forward after the rebuild"


def test_losing_state_and_the_newest_slot_keeps_the_floor(store: ModelStore, make_bundle: Callable[..., Path]) -> None:
    v2 = next(n for n in _slots(store) if "-v2-" in n)
    store.state_path.unlink()
    import shutil

    shutil.rmtree(store.slots / v2)
    reopened = ModelStore(store.root, store.trusted_keys)
    scorer = reopened.load_active()
    assert scorer is not None and scorer.version == 1, "still scores on the verified v1"
    assert reopened.floor == 2, "floor.json keeps the floor when state.json and the v2 slot are gone"

    def other(m: dict[str, Any]) -> None:
        m["created_at"] = "2026-11-02T00:00:00Z"  # a different, validly signed v1

    with pytest.raises(RollbackRefusedError):
        reopened.install(make_bundle(1, edit=other, name="other-v1.tar"))
    assert reopened.install(make_bundle(2, name="v2-again.tar")).version == 2, "the lost version itself may come back"


def test_losing_both_files_takes_the_floor_from_the_slots(store: ModelStore, make_bundle: Callable[..., Path]) -> None:
    store.state_path.unlink()
    store.floor_path.unlink()
    reopened = ModelStore(store.root, store.trusted_keys)
    assert reopened.floor == 2 and reopened.active_version == 2
    with pytest.raises(RollbackRefusedError):
        reopened.install(make_bundle(1, name="v1-again.tar"))


def test_an_edited_floor_file_cannot_lower_the_floor(store: ModelStore, make_bundle: Callable[..., Path]) -> None:
    store.floor_path.write_text('{"floor": 1}')
    reopened = ModelStore(store.root, store.trusted_keys)
    assert reopened.floor == 2
    store.floor_path.write_text("torn{")
    reopened = ModelStore(store.root, store.trusted_keys)
    assert reopened.floor == 2 and reopened.load_active().version == 2  # type: ignore[union-attr]


def test_a_lost_floor_file_is_restored_from_the_state(store: ModelStore) -> None:
    store.floor_path.unlink()
    reopened = ModelStore(store.root, store.trusted_keys)
    assert json.loads(store.floor_path.read_text()) == {"floor": 2} and reopened.recovery is None
    import shutil

    store.state_path.write_text("{")  # now losing the state and the v2 slot as well still keeps the floor
    shutil.rmtree(store.slots / next(n for n in _slots(store) if "-v2-" in n))
    again = ModelStore(store.root, store.trusted_keys)
    assert again.floor == 2 and again.active_version == 1


def test_a_damaged_slot_is_dropped_by_the_rebuild_and_the_other_kept(store: ModelStore, make_bundle: Callable[..., Path]) -> None:
    v1 = _v1_slot(store)
    model = store.slots / v1 / "artifacts" / "model.onnx"
    model.write_bytes(model.read_bytes()[:-1] + b"\x00")
    store.state_path.write_text("{")
    reopened = ModelStore(store.root, store.trusted_keys)
    assert reopened.active_version == 2 and v1 not in _slots(reopened)
    assert reopened.recovery is not None and reopened.recovery["discarded"] and v1 in reopened.recovery["discarded"][0]


def test_flipped_active_artifact_falls_back_and_says_so(store: ModelStore, make_bundle: Callable[..., Path]) -> None:
    active = store.slots / store.state()["active"] / "artifacts" / "model.onnx"
    data = bytearray(active.read_bytes())
    data[len(data) // 2] ^= 0x01
    active.write_bytes(bytes(data))
    reopened = ModelStore(store.root, store.trusted_keys)
    scorer = reopened.load_active()
    assert scorer is not None and scorer.version == 1
    fb = reopened.fallback
    assert fb is not None and fb["from_version"] == 2 and fb["to_version"] == 1 and "verification" in fb["reason"]
    again = ModelStore(store.root, store.trusted_keys)  # the fallback is still reported after a restart
    assert again.fallback == fb and again.load_active().version == 1  # type: ignore[union-attr]
    assert again.floor == 2
    with pytest.raises(RollbackRefusedError):
        again.install(make_bundle(1, edit=lambda m: m.update(created_at="2026-11-03T00:00:00Z"), name="other-v1.tar"))
    res = again.install(make_bundle(2, name="v2-redelivered.tar"))
    assert res.version == 2 and again.fallback is None, "re-delivering v2 repairs the device and clears the fallback"


def test_fresh_store_is_not_a_recovery(tmp_path: Path, keypair: dict[str, Any]) -> None:
    s = ModelStore(tmp_path / "new", keypair["public"])
    assert s.recovery is None and s.fallback is None and s.floor == 0 and s.load_active() is None
