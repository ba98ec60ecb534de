"""Bundle format v1: read, verify and pack signed model bundles.

A bundle is a folder (or a deterministic ``.tar`` of it)::

    manifest.json     canonical JSON (sorted keys, no spaces, UTF-8); see docs/bundle-format.md
    signature         base64 of a detached Ed25519 signature over manifest.json's exact bytes
    artifacts/...     one file per compiled format, listed in the manifest with size and sha256

Verification order, in the spirit of TUF's trusted-metadata rules, does no scoring and loads
nothing: (1) the signature over the manifest bytes with the caller's public key, (2) only then
parse the manifest and check its format version, (3) every listed artifact's size, then sha256,
(4) no unlisted file under ``artifacts/``. Until ``verify`` returns, nothing in the bundle is
trusted. This module is shared by the compiler, the fleet server and device runtimes, so it
needs only the standard library and ``cryptography``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edgefleet import keys
from edgefleet.errors import BundleError, VerificationError

__all__ = [
    "FORMAT_NAME", "FORMAT_VERSION", "Bundle", "canonical_json", "open_bundle", "pack", "slim", "verify",
]

FORMAT_NAME = "edgefleet.bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SIGNATURE = "signature"
MAX_MEMBER_BYTES = 512 * 1024 * 1024  # a single artifact larger than this is refused unread


def canonical_json(obj: Any) -> bytes:
    """The one byte form of a manifest: sorted keys, no whitespace, UTF-8, no NaN."""
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except ValueError as exc:
        raise BundleError(f"manifest is not valid JSON data: {exc}") from exc


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Bundle:
    """A bundle's bytes as read from disk. Nothing here is trusted before ``verify``."""

    source: str
    manifest_bytes: bytes
    signature: bytes
    files: dict[str, bytes] = field(repr=False)

    @property
    def manifest(self) -> dict[str, Any]:
        try:
            data = json.loads(self.manifest_bytes)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"{self.source}: manifest.json is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise BundleError(f"{self.source}: manifest.json must hold a JSON object")
        return data

    def artifact_bytes(self, rel_path: str) -> bytes:
        try:
            return self.files[rel_path]
        except KeyError:
            raise BundleError(f"{self.source}: artifact {rel_path} is missing from the bundle") from None


def _check_member_name(name: str, source: str) -> str:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise BundleError(f"{source}: unsafe path {name!r} in bundle")
    return str(path)


def _read_dir(root: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            raise BundleError(f"{root}: bundles may not contain links ({path.relative_to(root)})")
        if path.is_file():
            files[path.relative_to(root).as_posix()] = path.read_bytes()
    return files


def _read_tar(path: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                if member.isdir():
                    continue
                if not member.isfile():
                    raise BundleError(f"{path}: bundle archives may hold only files ({member.name})")
                if member.size > MAX_MEMBER_BYTES:
                    raise BundleError(f"{path}: member {member.name} is larger than {MAX_MEMBER_BYTES} bytes")
                name = _check_member_name(member.name, str(path))
                fh = tar.extractfile(member)
                assert fh is not None
                files[name] = fh.read()
    except (tarfile.TarError, EOFError) as exc:
        raise BundleError(f"{path}: not a readable bundle archive: {exc}") from exc
    return files


def open_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Read a bundle folder or ``.tar`` archive into memory, without trusting any of it."""
    p = Path(path)
    if not p.exists():
        raise BundleError(f"{p}: no such bundle (expected a bundle folder or .tar archive)")
    try:
        files = _read_dir(p) if p.is_dir() else _read_tar(p)
    except OSError as exc:
        raise BundleError(f"{p}: cannot read bundle: {exc.strerror or exc}") from exc
    if MANIFEST not in files:
        raise BundleError(f"{p}: manifest.json is missing; this is not an edgefleet bundle")
    if SIGNATURE not in files:
        raise BundleError(f"{p}: the signature file is missing; an unsigned bundle cannot be trusted")
    try:
        signature = base64.b64decode(files[SIGNATURE].strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise VerificationError(f"{p}: the signature file is not base64: {exc}") from exc
    return Bundle(str(p), files[MANIFEST], signature, files)


def verify(bundle: Bundle, public_key: Ed25519PublicKey, *, allow_partial: bool = False) -> dict[str, Any]:
    """Check signature, format, then every artifact; return the now-trusted manifest.

    ``allow_partial`` accepts a bundle that carries only some of the listed artifacts (the
    fleet server sends each device only the format it can run); every artifact present is
    still checked, at least one must be, and unlisted files are still refused.
    """
    try:
        keys.verify_signature(public_key, bundle.signature, bundle.manifest_bytes)
    except VerificationError as exc:
        claimed = _claimed_key_id(bundle.manifest_bytes)
        given = keys.key_id(public_key)
        hint = f" (manifest names key {claimed}, the given public key is {given})" if claimed and claimed != given else ""
        raise VerificationError(f"{bundle.source}: {exc}{hint}") from exc
    manifest = bundle.manifest
    if manifest.get("format") != FORMAT_NAME or manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{bundle.source}: unsupported bundle format {manifest.get('format')!r} "
            f"version {manifest.get('format_version')!r}; this edgefleet reads {FORMAT_NAME} v{FORMAT_VERSION}"
        )
    listed = set()
    present = 0
    for art in manifest.get("artifacts", []):
        rel = _check_member_name(str(art.get("path", "")), bundle.source)
        listed.add(rel)
        if allow_partial and rel not in bundle.files:
            continue
        data = bundle.artifact_bytes(rel)
        present += 1
        if len(data) != art.get("size"):
            raise VerificationError(
                f"{bundle.source}: artifact {rel} ({art.get('format')}) has {len(data)} bytes, "
                f"the signed manifest says {art.get('size')}"
            )
        digest = sha256_hex(data)
        if digest != art.get("sha256"):
            raise VerificationError(
                f"{bundle.source}: artifact {rel} ({art.get('format')}) sha256 is {digest}, "
                f"the signed manifest says {art.get('sha256')}: the file was changed or corrupted"
            )
    if present == 0:
        raise BundleError(f"{bundle.source}: the bundle carries none of the artifacts its manifest lists")
    extra = sorted(n for n in bundle.files if n.startswith("artifacts/") and n not in listed)
    if extra:
        raise VerificationError(f"{bundle.source}: files not listed in the signed manifest: {', '.join(extra)}")
    return manifest


def _claimed_key_id(manifest_bytes: bytes) -> str | None:
    try:
        value = json.loads(manifest_bytes).get("key_id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def pack(files: Mapping[str, bytes]) -> bytes:
    """A deterministic tar of a bundle: sorted names, zero times and owners, fixed modes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(files):
            data = files[name]
            info = tarfile.TarInfo(_check_member_name(name, "pack"))
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def slim(files: Mapping[str, bytes], manifest: Mapping[str, Any], formats: set[str]) -> dict[str, bytes]:
    """The bundle with only the artifacts of ``formats``: same signed manifest, fewer bytes."""
    keep = {a["path"] for a in manifest["artifacts"] if a["format"] in formats}
    return {n: d for n, d in files.items() if not n.startswith("artifacts/") or n in keep}
