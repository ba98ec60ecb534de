"""The device's model store: verified A/B slots, an atomic active pointer, auto-rollback.

Rules, in the spirit of python-tuf's trusted metadata set (each is tested):

1. Nothing unverified is ever loaded. A bundle is verified (signature, then each artifact's
   size and sha256) before it is written, and the active slot is verified again from disk
   whenever the store opens, so on-disk corruption is caught rather than scored.
2. The version never silently goes backwards: a bundle whose version is not above the active
   one is refused, unless ``allow_downgrade`` is set, which the sync agent does only for a
   signed server assignment that explicitly orders a rollback.
3. Switching is atomic and survives power loss at any step: the bundle is staged in
   ``tmp/``, fsynced, renamed into ``slots/``, health-checked, and only then is ``state.json``
   replaced (write temp file, fsync, ``os.replace``, fsync the folder). A crash leaves either
   the old or the new pointer, never a half-written one; stale staging folders are removed on
   the next open.
4. A bundle that fails its health check (replaying the manifest's canary rows) never becomes
   active: its slot is removed, the previous model keeps scoring, and the reason is reported.

Layout under ``root``: ``state.json``, ``slots/<version>-<sha12>/`` (a verified bundle folder),
``tmp/``. At most two slots are kept: active and previous.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgefleet.bundle_format import Bundle, open_bundle, verify
from edgefleet.errors import BundleError
from runtimes.python.errors import HealthCheckError, InstallError, RollbackRefusedError
from runtimes.python.scorer import PublicKeys, Scorer, trusted_key_for

DEFAULT_MAX_BUNDLE_BYTES = 256 * 1024 * 1024


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so a crash leaves the old or the new content, never a mix."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


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
        self.trusted_keys = trusted_keys
        self.max_bundle_bytes = max_bundle_bytes
        self.backend = backend
        self.slots = self.root / "slots"
        self.tmp = self.root / "tmp"
        self.state_path = self.root / "state.json"
        for d in (self.root, self.slots, self.tmp):
            d.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.tmp, ignore_errors=True)  # staging left by a crash
        self.tmp.mkdir(exist_ok=True)
        state = self.state()
        self._collect(keep={state.get("active"), state.get("previous")})  # slots orphaned by a crash
        self.last_error: str | None = None

    # -- state -----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_path.read_bytes())
            return data if isinstance(data, dict) else {}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return {}  # a torn state file cannot happen with atomic_write; treat as empty

    def _write_state(self, state: dict[str, Any]) -> None:
        atomic_write(self.state_path, json.dumps(state, sort_keys=True).encode())

    @property
    def active_version(self) -> int | None:
        v = self.state().get("active_version")
        return int(v) if isinstance(v, int) else None

    # -- loading ---------------------------------------------------------------------------
    def _verified(self, bundle: Bundle) -> dict[str, Any]:
        return verify(bundle, trusted_key_for(bundle, self.trusted_keys), allow_partial=True)

    def _load_slot(self, slot: str) -> Scorer:
        bundle = open_bundle(self.slots / slot)
        manifest = self._verified(bundle)
        return Scorer(manifest, bundle.files, self.backend)

    def load_active(self) -> Scorer | None:
        """The verified active model; falls back to the previous slot if the active one is damaged."""
        state = self.state()
        for key in ("active", "previous"):
            slot = state.get(key)
            if not slot:
                continue
            try:
                scorer = self._load_slot(slot)
            except (BundleError, OSError) as exc:
                self.last_error = f"slot {slot} failed verification on load: {exc}"
                continue
            if key == "previous":
                self._write_state({"active": slot, "active_version": scorer.version, "previous": None, "recovered_from": state.get("active")})
            return scorer
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
        except BundleError as exc:
            raise InstallError(f"refused bundle {path.name}: {exc}") from exc

        state = self.state()
        version = int(manifest["version"])
        active_version = state.get("active_version")
        digest = hashlib.sha256(bundle.manifest_bytes).hexdigest()[:12]
        slot = f"{manifest['name']}-v{version}-{digest}"
        if active_version is not None:
            if slot == state.get("active"):
                return InstallResult(manifest["name"], version, slot, active_version, 0.0)
            if version <= active_version and not allow_downgrade:
                raise RollbackRefusedError(
                    f"refused {manifest['name']} v{version}: the active version is v{active_version}, and "
                    "versions only go forward unless a signed assignment orders a rollback"
                )

        final = self.slots / slot
        if not final.exists():
            staging = self.tmp / uuid.uuid4().hex
            for name, data in bundle.files.items():
                dest = staging / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                with open(dest, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
            for d in {p.parent for p in staging.rglob("*")} | {staging}:
                _fsync_dir(d)
            os.replace(staging, final)
            _fsync_dir(self.slots)

        try:
            scorer = self._load_slot(slot)  # verify what is on disk, not what was in memory
            failures = scorer.check_canaries()
        except (BundleError, OSError) as exc:
            failures = [f"{type(exc).__name__}: {exc}"]
        if failures:
            shutil.rmtree(final, ignore_errors=True)
            self.last_error = f"{manifest['name']} v{version} failed its health check: {'; '.join(failures[:3])}"
            raise HealthCheckError(f"{self.last_error}; kept v{active_version} active" if active_version else self.last_error)

        self._write_state({"active": slot, "active_version": version, "previous": state.get("active"), "previous_version": active_version})
        self._collect(keep={slot, state.get("active")})
        return InstallResult(manifest["name"], version, slot, active_version, time.perf_counter() - t0, scorer)

    def rollback(self) -> Scorer:
        """Make the previous slot active again (an operator's or a failed gate's decision)."""
        state = self.state()
        prev = state.get("previous")
        if not prev or not (self.slots / prev).exists():
            raise InstallError("there is no previous model to roll back to")
        scorer = self._load_slot(prev)
        self._write_state({"active": prev, "active_version": scorer.version, "previous": state.get("active"), "previous_version": state.get("active_version")})
        return scorer

    def _collect(self, keep: set[Any]) -> None:
        for p in self.slots.iterdir():
            if p.name not in keep:
                shutil.rmtree(p, ignore_errors=True)
