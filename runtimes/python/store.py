"""The device's model store: verified A/B slots, an atomic active pointer, auto-rollback.

Rules, in the spirit of python-tuf's trusted metadata set and OkHttp's DiskLruCache (each is
tested in tests/runtimes/test_store.py and test_store_recovery.py):

1. Nothing unverified is ever loaded. A bundle is verified (signature, then each artifact's
   size and sha256) before it is written, and the active slot is verified again from disk
   whenever it is loaded, so on-disk corruption is caught rather than scored.
2. The version never silently goes backwards. A bundle whose version is not above the active
   one, or is below the anti-rollback **floor** (the highest version this device ever
   activated), is refused unless ``allow_downgrade`` is set, which the sync agent does only
   for a signed server assignment that explicitly orders a rollback. The floor is never
   lowered, not even by an ordered rollback.
3. Switching is atomic and survives power loss at any step: the bundle is staged in
   ``tmp/``, fsynced, renamed into ``slots/``, health-checked, and only then is ``state.json``
   replaced (write temp file, fsync, ``os.replace``, fsync the folder). A crash leaves either
   the old or the new pointer, never a half-written one; stale staging folders are removed on
   the next open.
4. A bundle that fails its health check (replaying the manifest's canary rows) never becomes
   active: its slot is removed, the previous model keeps scoring, and the reason is reported.
5. ``state.json`` is a cache of what the slots already prove, never the only copy of it. It
   is read defensively: a file that is missing, torn, not an object, has a field of the wrong
   type (``active_version`` ``"2"``, ``0``, ``-1``, a bool), names a slot that is not on disk
   or whose name disagrees with its version is *unreadable*, never an exception. An
   unreadable state is **rebuilt from the slots** (like DiskLruCache rebuilding its journal):
   every slot is verified and health-checked again, the highest verified version becomes
   active and the next one previous, and the new state is written atomically.
6. The floor is kept in two files, ``state.json`` and ``floor.json``, each written
   atomically; the floor in force is the maximum of both and of every verified slot's version,
   so losing or editing one file cannot lower it.
7. Only what is known bad is deleted (DiskLruCache deletes only entries it knows are dirty): a
   slot is removed when it failed verification, failed its health check, or is an orphan next
   to a *readable* state (a crash between slot rename and pointer switch). A verified slot is
   never deleted because the state could not be read; a rebuild keeps the two highest verified
   slots (active and previous, as an install does) and drops only older ones beyond them.
8. What happened is reported: ``recovery`` says the state was rebuilt and why; ``fallback``
   says the active slot failed verification on load and an older verified one took over (it
   is persisted, so it is still reported after a restart, until the next install).

Layout under ``root``: ``state.json``, ``floor.json``, ``slots/<name>-v<version>-<sha12>/`` (a
verified bundle folder), ``tmp/``. After an install, at most two slots are kept: active and
previous.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from edgefleet.bundle_format import Bundle, open_bundle, verify
from edgefleet.errors import BundleError
from edgefleet.fsutil import atomic_write, fsync_dir
from edgefleet.manifest import VerifiedManifest
from runtimes.python.errors import HealthCheckError, InstallError, RollbackRefusedError
from runtimes.python.scorer import PublicKeys, Scorer, trusted_key_for

DEFAULT_MAX_BUNDLE_BYTES = 256 * 1024 * 1024

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_MAX_BUNDLE_BYTES", "InstallResult", "ModelStore"]


@dataclass(frozen=True)
class InstallResult:
    name: str
    version: int
    slot: str
    previous_version: int | None
    seconds: float
    scorer: Scorer | None = field(default=None, compare=False, repr=False)  # the health-checked model


class ModelStore:
    def __init__(self, root: str | os.PathLike[str], trusted_keys: PublicKeys, *, max_bundle_bytes: int = DEFAULT_MAX_BUNDLE_BYTES, backend: str | None = None) -> None:
        self.root = Path(root)
        self.trusted_keys = trusted_keys  # publisher keys: the only keys a bundle may be signed with
        self.max_bundle_bytes = max_bundle_bytes
        self.backend = backend
        self.slots = self.root / "slots"
        self.tmp = self.root / "tmp"
        self.state_path = self.root / "state.json"
        self.floor_path = self.root / "floor.json"
        self.last_error: str | None = None
        self.recovery: dict[str, Any] | None = None  # set when state.json had to be rebuilt
        self.last_health_check: dict[str, Any] | None = None  # the last canary replay: slot, rows replayed, failures
        for d in (self.root, self.slots, self.tmp):
            d.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.tmp, ignore_errors=True)  # staging left by a crash
        self.tmp.mkdir(exist_ok=True)
        state, problem = self._read_state()
        if problem is None and state.get("active"):
            floor_file, floor_state = self._floor_file(), state.get("floor") or 0
            if floor_state < floor_file:
                problem = f"state.json: floor v{floor_state} is below floor.json's v{floor_file} (a stale or edited state)"
            elif state["active_version"] < floor_file and not (state.get("fallback") or state.get("rolled_back")):
                problem = f"state.json: active v{state['active_version']} is below the floor v{floor_file} with no fallback or ordered rollback recorded"
            else:
                if floor_state > floor_file:  # floor.json lost or behind: restore the second copy
                    atomic_write(self.floor_path, json.dumps({"floor": floor_state}).encode())
                self._collect(keep={state.get("active"), state.get("previous")})  # slots orphaned by a crash
        if problem is not None or (not state.get("active") and (any(self.slots.iterdir()) or self._floor_file() > 0)):
            self._rebuild(problem or ("state.json is missing" if not state else "state.json names no active slot"))

    # -- state -----------------------------------------------------------------------------
    def _read_state(self) -> tuple[dict[str, Any], str | None]:
        """The parsed state and ``None``, or ``({}, reason)`` when it cannot be trusted.

        A missing file on a store that has never installed anything is ``({}, None)``.
        """
        try:
            raw = self.state_path.read_bytes()
        except FileNotFoundError:
            return {}, None
        except OSError as exc:
            return {}, f"state.json cannot be read: {exc.strerror or exc}"
        try:
            data = json.loads(raw)
        except ValueError as exc:
            return {}, f"state.json is not JSON (torn or edited): {exc}"
        if not isinstance(data, dict):
            return {}, f"state.json is a JSON {type(data).__name__}, not an object"
        problem = _state_problem(data, self.slots)
        return (data, None) if problem is None else ({}, f"state.json: {problem}")

    def state(self) -> dict[str, Any]:
        """The current pointer (``{}`` when nothing is installed). Never raises."""
        return self._read_state()[0]

    def _floor_file(self) -> int:
        try:
            v = json.loads(self.floor_path.read_bytes()).get("floor")
        except (OSError, ValueError, AttributeError):
            return 0
        return v if _is_version(v) else 0

    @property
    def floor(self) -> int:
        """The anti-rollback floor: no unordered install may go below it (0 = none yet)."""
        v = self.state().get("floor")
        return max(v if _is_version(v) else 0, self._floor_file())

    def _write_state(self, state: dict[str, Any]) -> None:
        floor = max([self.floor] + [v for v in (state.get("active_version"), state.get("floor")) if _is_version(v)])
        state = {**state, "floor": floor}
        if floor > self._floor_file():  # the floor file first: a crash between the two leaves it higher, never lower
            atomic_write(self.floor_path, json.dumps({"floor": floor}).encode())
        atomic_write(self.state_path, json.dumps(state, sort_keys=True).encode())

    @property
    def active_version(self) -> int | None:
        v = self.state().get("active_version")
        return v if _is_version(v) else None

    @property
    def fallback(self) -> dict[str, Any] | None:
        """Set when the active slot failed verification and an older verified one took over."""
        fb = self.state().get("fallback")
        return fb if isinstance(fb, dict) else None

    def _rebuild(self, reason: str) -> None:
        """Re-derive the state from the slots on disk: verify each, keep every verified one."""
        floor_before = self.floor
        verified: list[tuple[int, str]] = []
        refused: list[str] = []
        for p in sorted(self.slots.iterdir()):
            scorer, failures = self._health_check(p.name)
            if scorer is None or failures:
                refused.append(f"{p.name}: {failures[0]}"[:300])
                shutil.rmtree(p, ignore_errors=True)  # known bad: failed verification or health
            else:
                verified.append((scorer.version, p.name))
        verified.sort(reverse=True)
        for _, extra in verified[2:]:  # what an install would have kept: active and previous
            shutil.rmtree(self.slots / extra, ignore_errors=True)
        state: dict[str, Any] = {"active": None, "active_version": None, "previous": None, "previous_version": None}
        if verified:
            state.update(active=verified[0][1], active_version=verified[0][0])
        if len(verified) > 1:
            state.update(previous=verified[1][1], previous_version=verified[1][0])
        state["floor"] = max([floor_before] + [v for v, _ in verified])
        self._write_state(state)
        self.recovery = {"reason": reason[:500], "rebuilt_from": [v for v, _ in verified], "floor": state["floor"],
                         "discarded": refused, "active_version": state["active_version"]}
        self.last_error = f"{reason}; rebuilt from {len(verified)} verified slot(s), floor v{state['floor']}"
        log.warning("model store %s rebuilt: %s", self.root, self.last_error)

    # -- loading ---------------------------------------------------------------------------
    def _verified(self, bundle: Bundle) -> VerifiedManifest:
        return verify(bundle, trusted_key_for(bundle, self.trusted_keys), allow_partial=True)

    def _load_slot(self, slot: str) -> Scorer:
        bundle = open_bundle(self.slots / slot)
        manifest = self._verified(bundle)
        return Scorer(manifest, bundle.files, self.backend)

    def load_active(self) -> Scorer | None:
        """The verified active model; falls back to an older verified slot if the active one is damaged.

        A fallback is written to the state (``fallback``: from which version, to which, why)
        so the agent reports it; the damaged slot is removed, the floor stays where it was.
        """
        state = self.state()
        named = [s for s in (state.get("active"), state.get("previous")) if isinstance(s, str)]
        candidates = named + sorted((p.name for p in self.slots.iterdir() if p.name not in named), key=_slot_version, reverse=True)
        failed: list[str] = []
        for slot in candidates:
            if not slot or not (self.slots / slot).is_dir():
                continue
            try:
                scorer = self._load_slot(slot)
            except (BundleError, OSError, ValueError) as exc:
                self.last_error = f"slot {slot} failed verification on load: {exc}"
                log.error("%s; removing it", self.last_error)
                failed.append(slot)
                shutil.rmtree(self.slots / slot, ignore_errors=True)  # known bad; a verified copy is re-downloadable
                continue
            if slot != state.get("active"):
                from_version = state.get("active_version") if _is_version(state.get("active_version")) else _slot_version(str(state.get("active")))
                fallback = {"from_version": from_version or None, "to_version": scorer.version, "reason": (self.last_error or "")[:500]}
                log.warning("fell back from v%s to the verified slot %s (v%s)", from_version or None, slot, scorer.version)
                self._write_state({"active": slot, "active_version": scorer.version, "previous": None, "previous_version": None,
                                   "recovered_from": state.get("active"), "fallback": fallback})
            return scorer
        if failed:
            self._write_state({"active": None, "active_version": None, "previous": None, "previous_version": None,
                               "fallback": {"from_version": state.get("active_version"), "to_version": None, "reason": (self.last_error or "")[:500]}})
        return None

    # -- install ---------------------------------------------------------------------------
    def install(self, source: str | os.PathLike[str], *, allow_downgrade: bool = False) -> InstallResult:
        """Verify, stage, health-check and activate a bundle archive or folder."""
        t0 = time.perf_counter()
        path = Path(source)
        try:
            size = path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        except OSError as exc:
            raise InstallError(f"cannot read bundle {path}: {exc.strerror or exc}") from exc
        if size > self.max_bundle_bytes:
            raise InstallError(f"bundle {path} is {size} bytes, over this device's limit of {self.max_bundle_bytes}")
        try:
            bundle = open_bundle(path)
            manifest = self._verified(bundle)
            version = manifest["version"]
            name = str(manifest["name"])
        except (BundleError, KeyError, TypeError) as exc:
            log.error("refused bundle %s: %s", path.name, exc)
            raise InstallError(f"refused bundle {path.name}: {exc}") from exc
        if not _is_version(version):
            raise InstallError(f"refused bundle {path.name}: version: {version!r} is not a positive integer")
        log.info("verified bundle %s: %s v%s (signature and artifact hashes)", path.name, name, version)

        state = self.state()
        active_version = state.get("active_version") if _is_version(state.get("active_version")) else None
        floor = self.floor
        digest = hashlib.sha256(bundle.manifest_bytes).hexdigest()[:12]
        slot = f"{name}-v{version}-{digest}"
        final = self.slots / slot
        if slot == state.get("active") and final.is_dir():
            try:
                current = self._load_slot(slot)
                return InstallResult(name, version, slot, active_version, 0.0, current)
            except (BundleError, OSError, ValueError) as exc:  # the active copy is damaged: rewrite it from this verified bundle
                log.warning("the active slot %s is damaged (%s); rewriting it from the verified bundle", slot, exc)
        if not allow_downgrade:
            if active_version is not None and version <= active_version:
                raise RollbackRefusedError(
                    f"refused {name} v{version}: the active version is v{active_version}, and "
                    "versions only go forward unless a signed assignment orders a rollback"
                )
            if version < floor:
                raise RollbackRefusedError(
                    f"refused {name} v{version}: this device has already run v{floor} (its anti-rollback floor), and "
                    "versions only go forward unless a signed assignment orders a rollback"
                )

        if final.exists():
            try:
                self._load_slot(slot)
            except (BundleError, OSError, ValueError) as exc:
                log.warning("slot %s is a damaged copy of this bundle (%s); replacing it", slot, exc)
                shutil.rmtree(final, ignore_errors=True)
        if not final.exists():
            staging = self.tmp / uuid.uuid4().hex
            for fname, data in bundle.files.items():
                dest = staging / fname
                dest.parent.mkdir(parents=True, exist_ok=True)
                with open(dest, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
            for d in {p.parent for p in staging.rglob("*")} | {staging}:
                fsync_dir(d)
            os.replace(staging, final)
            fsync_dir(self.slots)

        scorer, failures = self._health_check(slot)  # verify what is on disk, not what was in memory
        if scorer is None or failures:
            if slot != state.get("active"):
                shutil.rmtree(final, ignore_errors=True)
            self.last_error = f"{name} v{version} failed its health check: {'; '.join(failures[:3])}"
            log.error("%s; kept v%s active", self.last_error, active_version)
            raise HealthCheckError(f"{self.last_error}; kept v{active_version} active" if active_version else self.last_error)

        previous = state.get("active") if state.get("active") != slot else state.get("previous")
        previous_version = active_version if state.get("active") != slot else state.get("previous_version")
        self._write_state({"active": slot, "active_version": version, "previous": previous, "previous_version": previous_version,
                           "rolled_back": version < floor})
        self._collect(keep={slot, previous})
        log.info("installed %s v%s in slot %s (%s)%s", name, version, slot,
                 f"previous v{previous_version}" if previous_version is not None else "the first model on this device",
                 " as an ordered rollback" if version < floor else "")
        return InstallResult(name, version, slot, active_version, time.perf_counter() - t0, scorer)

    def rollback(self) -> Scorer:
        """Make the previous slot active again (an operator's or a failed gate's decision).

        The previous slot passes the same gate as an install: it is verified from disk and its
        canary rows are replayed. If either fails, the active model keeps scoring, the slot is
        left in place (it is still the signed bundle that once passed, and a later runtime may
        score it again) and :class:`HealthCheckError` or :class:`InstallError` says why.
        """
        state = self.state()
        prev = state.get("previous")
        if not isinstance(prev, str) or not (self.slots / prev).exists():
            raise InstallError("there is no previous model to roll back to")
        scorer, failures = self._health_check(prev)
        if scorer is None:
            self.last_error = f"the previous model {prev} failed verification: {failures[0]}"
            log.error("rollback refused: %s", self.last_error)
            raise InstallError(self.last_error)
        if failures:
            self.last_error = f"rollback to {prev} refused: its health check failed: {'; '.join(failures[:3])}"
            log.error("%s; kept v%s active", self.last_error, state.get("active_version"))
            raise HealthCheckError(f"{self.last_error}; kept v{state.get('active_version')} active")
        self._write_state({"active": prev, "active_version": scorer.version, "previous": state.get("active"),
                           "previous_version": state.get("active_version"), "rolled_back": scorer.version < self.floor})
        log.info("rolled back from v%s to v%s (%s)", state.get("active_version"), scorer.version, prev)
        return scorer

    def _health_check(self, slot: str) -> tuple[Scorer | None, list[str]]:
        """Load ``slot`` verified from disk and replay its canary rows: the gate of every install,
        rebuild and rollback. Returns ``(None, [why])`` when it does not verify, else the scorer
        and one message per failing canary (empty = healthy). Never raises a bundle error."""
        try:
            scorer = self._load_slot(slot)
        except (BundleError, OSError, ValueError) as exc:
            log.warning("slot %s failed verification: %s", slot, exc)
            self.last_health_check = {"slot": slot, "verified": False, "canaries": 0, "failures": [f"{type(exc).__name__}: {exc}"]}
            return None, [f"{type(exc).__name__}: {exc}"]
        try:
            failures = scorer.check_canaries()
        except (BundleError, ValueError, KeyError, TypeError) as exc:  # a malformed canary section is a health failure
            failures = [f"canaries: {type(exc).__name__}: {exc}"]
        rows = scorer.manifest.get("canary", {}).get("rows", [])
        replayed = len(rows) if isinstance(rows, list) else 0
        self.last_health_check = {"slot": slot, "verified": True, "version": scorer.version, "canaries": replayed,
                                  "failures": failures[:10]}
        if failures:
            log.warning("canary check of %s v%s failed: %d of %d row(s): %s", scorer.name, scorer.version, len(failures),
                        replayed, "; ".join(failures[:3]))
        else:
            log.info("canary check of %s v%s passed: %d row(s) replayed", scorer.name, scorer.version, replayed)
        return scorer, failures

    def _collect(self, keep: set[Any]) -> None:
        for p in self.slots.iterdir():
            if p.name not in keep:
                shutil.rmtree(p, ignore_errors=True)


_MAX_VERSION = 2 ** 31  # the manifest schema's bound


def _is_version(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool) and 0 < v < _MAX_VERSION


def _slot_version(slot: str) -> int:
    """The version a slot's name claims (``<name>-v<version>-<sha12>``), 0 if it claims none."""
    try:
        v = int(slot.rsplit("-", 2)[-2].removeprefix("v"))
    except (IndexError, ValueError):
        return 0
    return v if _is_version(v) else 0


def _state_problem(data: dict[str, Any], slots: Path) -> str | None:
    """Why a parsed state cannot be trusted, or None. Only the shape is checked here; the
    slot itself is verified when it is loaded."""
    active, version = data.get("active"), data.get("active_version")
    if active is None and version is None:
        return None if data.get("previous") is None else "previous is set but active is not"
    if not isinstance(active, str) or not active or "/" in active or active.startswith("."):
        return f"active: {active!r} is not a slot name"
    if not _is_version(version):
        return f"active_version: {version!r} is not a positive integer"
    if _slot_version(active) != version:
        return f"active_version: {version} disagrees with the slot name {active!r}"
    if not (slots / active).is_dir():
        return f"active: slot {active!r} is not on disk"
    prev, pv = data.get("previous"), data.get("previous_version")
    if prev is not None and (not isinstance(prev, str) or "/" in prev or prev.startswith(".")):
        return f"previous: {prev!r} is not a slot name"
    if pv is not None and not _is_version(pv):
        return f"previous_version: {pv!r} is not a positive integer"
    floor = data.get("floor")
    if floor is not None and not _is_version(floor):
        return f"floor: {floor!r} is not a positive integer"
    return None
