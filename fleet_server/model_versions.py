"""Model registry: accept signed bundles, keep them content-addressed, derive slim variants.

An upload is verified (no unlisted, duplicate or sparse member; the signature against the
trusted publisher keys; the manifest against its schema; then every artifact) before anything
is stored. Versions of a name only go up: an upload whose version is not above the newest
registered one is a 409. The archive is kept as ``artifacts/<sha256>.tar``,
plus one slim archive per format (same signed manifest, one artifact) so a device downloads
only what it can run.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from edgefleet.bundle_format import open_bundle, pack, slim, verify
from edgefleet.errors import BundleError
from edgefleet.fsutil import atomic_write
from fleet_server.core import Fleet
from fleet_server.db import ModelVersion
from fleet_server.errors import Conflict, FleetError, NotFound


def _store(fleet: Fleet, data: bytes) -> tuple[str, int]:
    sha = hashlib.sha256(data).hexdigest()
    path = fleet.artifacts_dir / f"{sha}.tar"
    if not path.exists():  # content-addressed: parallel uploads of one bundle each write a unique temp file
        atomic_write(path, data)
    return sha, len(data)


def register(fleet: Fleet, archive: bytes, provenance: dict[str, Any] | None = None) -> ModelVersion:
    if not archive:
        raise FleetError("body: empty upload; send the bundle .tar as the request body")
    if len(archive) > fleet.cfg.max_bundle_bytes:
        raise FleetError(f"body: {len(archive)} bytes is over the server limit of {fleet.cfg.max_bundle_bytes}")
    with tempfile.NamedTemporaryFile(suffix=".tar", delete=False) as fh:
        fh.write(archive)
    try:
        bundle = open_bundle(fh.name, max_total_bytes=fleet.cfg.max_bundle_bytes, source="upload")
        trusted = fleet.trusted_keys()
        if not trusted:
            raise FleetError("bundle: the server trusts no publisher key yet; add one with --trust-key or POST /api/v1/keys")
        claimed = bundle.manifest.get("key_id")  # a BundleError if manifest.json is not a JSON object
        from edgefleet import keys

        key = next((k for k in trusted if keys.key_id(k) == claimed), None)
        if key is None:
            shown = repr(claimed) if len(repr(claimed)) <= 40 else repr(claimed)[:37] + "..."
            raise FleetError(f"bundle: signed by key {shown}, which this server does not trust")
        manifest = verify(bundle, key)
    except BundleError as exc:
        raise FleetError(f"bundle: {exc}") from exc
    finally:
        os.unlink(fh.name)
    name, version = manifest["name"], manifest["version"]  # schema-checked by verify: a safe name, an int in [1, 2**31): INTEGER columns on PostgreSQL
    with fleet.session() as s:
        newest = s.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.name == name))
        if newest is not None and version <= newest:
            raise Conflict(f"version: {name} v{version} is not above the newest registered v{newest}; versions only go up")
        sha, size = _store(fleet, pack(bundle.files))
        variants = {"full": {"sha256": sha, "size": size}}
        formats = [a["format"] for a in manifest["artifacts"]]
        for fmt in formats:
            vsha, vsize = _store(fleet, pack(slim(bundle.files, manifest, {fmt})))
            variants[fmt] = {"sha256": vsha, "size": vsize}
        row = ModelVersion(name=name, version=version, sha256=sha, size=size, key_id=manifest["key_id"], formats=formats,
                           variants=variants, manifest=manifest, provenance=provenance or {})
        s.add(row)
    fleet.latest_versions.pop(name, None)
    return row


def get_version(fleet: Fleet, name: str, version: int | None = None) -> ModelVersion:
    with fleet.session() as s:
        q = select(ModelVersion).where(ModelVersion.name == name)
        q = q.where(ModelVersion.version == version) if version is not None else q.order_by(ModelVersion.version.desc())
        row = s.scalars(q.limit(1)).first()
    if row is None:
        raise NotFound(f"model: no {name}{f' v{version}' if version is not None else ''} is registered")
    return row


def describe(row: ModelVersion, full: bool = False) -> dict[str, Any]:
    m = row.manifest
    out = {
        "name": row.name, "version": row.version, "sha256": row.sha256, "size": row.size, "formats": row.formats,
        "key_id": row.key_id, "created_at": m.get("created_at"), "uploaded_at": row.uploaded_at.isoformat() + "Z",
        "parity": [{k: p.get(k) for k in ("format", "runtime", "max_abs_diff", "passed")} for p in m.get("parity", [])],
        "metrics": m.get("reference", {}).get("metrics", {}), "provenance": row.provenance,
    }
    if full:
        out["manifest"] = m
        out["variants"] = row.variants
    return out


def artifact_path(fleet: Fleet, sha: str) -> Path:
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise NotFound("artifact: not a sha256")
    path = fleet.artifacts_dir / f"{sha}.tar"
    if not path.exists():
        raise NotFound(f"artifact: {sha} is not stored here")
    return path
