"""Bundle format v1: read, verify and pack signed model bundles.

A bundle is a folder (or a deterministic ``.tar`` of it)::

    manifest.json     canonical JSON (sorted keys, no spaces, UTF-8); see docs/bundle-format.md
    signature         base64 of a detached Ed25519 signature over manifest.json's exact bytes
    artifacts/...     one file per compiled format, listed in the manifest with size and sha256

Reading (``open_bundle``) trusts nothing and bounds everything before a byte of content is
read: every tar member must be a regular file (no links, devices, fifos, sparse members) or a
directory that is a parent of a listed file; no name may appear twice (also not in another
letter case); each member is at most ``MAX_MEMBER_BYTES`` and all together at most
``MAX_TOTAL_BYTES`` (or the caller's lower limit); and every file must be ``manifest.json``,
``signature`` or a path the manifest lists, so an unlisted file is refused unread.

Verification order, in the spirit of TUF's trusted-metadata rules, does no scoring and loads
nothing: (1) the signature over the manifest bytes with the caller's public key, (2) only then
parse the manifest, check its format version and validate it against
``schema/manifest.schema.json`` (``edgefleet.manifest_schema``, standard library only), so no
field is used before it is known to be well formed, (3) every listed artifact's size, then
sha256, (4) no file the signed manifest does not list. Until ``verify`` returns, nothing in the
bundle is trusted. This module is shared by the compiler, the fleet server and device runtimes, so it
needs only the standard library and ``cryptography``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import os
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edgefleet import keys
from edgefleet.errors import BundleError, VerificationError
from edgefleet.manifest import VerifiedManifest, _issue
from edgefleet.manifest_schema import ManifestError, check_manifest

__all__ = [
    "FORMAT_NAME", "FORMAT_VERSION", "Bundle", "canonical_json", "open_bundle", "pack", "slim", "validate_manifest", "verify",
]

FORMAT_NAME = "edgefleet.bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SIGNATURE = "signature"
MAX_MEMBER_BYTES = 512 * 1024 * 1024  # a single artifact larger than this is refused unread
MAX_TOTAL_BYTES = 1024 * 1024 * 1024  # all files of one bundle together, as declared in the tar headers
MAX_MANIFEST_BYTES = 16 * 1024 * 1024  # a real manifest is tens of KiB
MAX_SIGNATURE_BYTES = 4096  # base64 of a 64-byte Ed25519 signature is 88 characters
MAX_MEMBERS = 256  # manifest, signature and one artifact per format, with room to spare
_ARTIFACT_PATH = re.compile(r"artifacts/[A-Za-z0-9._-]+", re.ASCII)  # as in the schema; no sub-folders, no ..


def canonical_json(obj: Any) -> bytes:
    """The one byte form of a manifest: sorted keys, no whitespace, UTF-8, no NaN."""
    if isinstance(obj, Mapping) and not isinstance(obj, dict):  # a VerifiedManifest is a read-only Mapping
        obj = dict(obj)
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
        return _parse_manifest(self.manifest_bytes, self.source)

    def artifact_bytes(self, rel_path: str) -> bytes:
        try:
            return self.files[rel_path]
        except KeyError:
            raise BundleError(f"{self.source}: artifact {rel_path} is missing from the bundle") from None


def _parse_manifest(data: bytes, source: str) -> dict[str, Any]:
    """The manifest as a JSON object (not yet trusted or schema-checked)."""
    try:
        parsed = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{source}: manifest.json is not valid JSON: {exc}") from exc
    except RecursionError:
        raise BundleError(f"{source}: manifest.json is nested too deeply to be a bundle manifest") from None
    if not isinstance(parsed, dict):
        raise BundleError(f"{source}: manifest.json must hold a JSON object")
    return parsed


def _check_member_name(name: str, source: str) -> str:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise BundleError(f"{source}: unsafe path {name!r} in bundle")
    return str(path)


def _listed_paths(manifest_bytes: bytes, source: str) -> set[str]:
    """The artifact paths the (still untrusted) manifest lists: all that may be read besides it."""
    arts = _parse_manifest(manifest_bytes, source).get("artifacts")
    if not isinstance(arts, list):
        raise BundleError(f"{source}: malformed manifest: artifacts: must be an array of entries, each with a path")
    for i, a in enumerate(arts):
        path = a.get("path") if isinstance(a, dict) else None
        if not isinstance(path, str) or not _ARTIFACT_PATH.fullmatch(path):
            raise BundleError(f"{source}: malformed manifest: artifacts[{i}].path: must be artifacts/<name> (letters, digits, . _ -), got {_short(path)}")
    return {a["path"] for a in arts}


class _Plan:
    """Checks a bundle's file list (names, sizes) before any content is read."""

    def __init__(self, source: str, max_total: int) -> None:
        self.source, self.max_total = source, max_total
        self.names: dict[str, str] = {}  # casefolded name -> name
        self.total = 0

    def add(self, raw_name: str, size: int) -> str:
        name = _check_member_name(raw_name, self.source)
        folded = name.casefold()
        if folded in self.names:
            raise BundleError(f"{self.source}: {raw_name!r} appears twice in the bundle (as {self.names[folded]!r}); duplicates are refused")
        if len(self.names) >= MAX_MEMBERS:
            raise BundleError(f"{self.source}: more than {MAX_MEMBERS} files; this is not a bundle")
        limit = {MANIFEST: MAX_MANIFEST_BYTES, SIGNATURE: MAX_SIGNATURE_BYTES}.get(name, MAX_MEMBER_BYTES)
        if size < 0 or size > limit:
            raise BundleError(f"{self.source}: member {name} is {size} bytes, over the limit of {limit}")
        self.total += size
        if self.total > self.max_total:
            raise BundleError(f"{self.source}: the files add up to more than {self.max_total} bytes; refused unread")
        self.names[folded] = name
        return name

    def allowed(self, manifest_bytes: bytes) -> set[str]:
        listed = _listed_paths(manifest_bytes, self.source)
        unlisted = sorted(n for n in self.names.values() if n not in (MANIFEST, SIGNATURE) and n not in listed)
        if unlisted:
            raise VerificationError(f"{self.source}: files not listed in the signed manifest: {', '.join(unlisted)}")
        return listed

    def check_dirs(self, dirs: list[str], listed: set[str]) -> None:
        parents = {str(p) for n in listed for p in PurePosixPath(n).parents}
        for d in dirs:
            if d not in parents:
                raise VerificationError(f"{self.source}: folder {d!r} holds no file the signed manifest lists")


def _read_exact(fh: Any, size: int, name: str, source: str) -> bytes:
    """Exactly ``size`` bytes (already checked against the caps), in one allocation."""
    data = fh.read(size)
    if len(data) != size:
        raise BundleError(f"{source}: member {name} is truncated ({len(data)} of {size} bytes)")
    if not isinstance(data, bytes):
        raise BundleError(f"{source}: member {name} did not read as bytes")
    if fh.read(1):
        raise BundleError(f"{source}: member {name} is longer than its {size} declared bytes")
    return data


def _read_dir(root: Path, max_total: int) -> dict[str, bytes]:
    plan = _Plan(str(root), max_total)
    dirs: list[str] = []
    paths: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            raise BundleError(f"{root}: bundles may not contain links ({rel})")
        if path.is_dir():
            dirs.append(_check_member_name(rel, str(root)))
        elif path.is_file():
            st = path.stat()
            if st.st_nlink > 1:  # as in an archive: a hard link could alias a file outside the bundle
                raise BundleError(f"{root}: bundles may not contain links ({rel} is a hard link)")
            paths[plan.add(rel, st.st_size)] = path
        else:
            raise BundleError(f"{root}: bundles may hold only files and folders ({rel} is neither)")
    files: dict[str, bytes] = {}
    for name in (MANIFEST, SIGNATURE):
        if name in paths:
            with open(paths[name], "rb") as fh:
                files[name] = _read_exact(fh, paths[name].stat().st_size, name, str(root))
    if MANIFEST not in files:
        return files
    listed = plan.allowed(files[MANIFEST])
    plan.check_dirs(dirs, listed)
    for name, path in paths.items():
        if name not in files:
            with open(path, "rb") as fh:
                files[name] = _read_exact(fh, path.stat().st_size, name, str(root))
    return files


def _read_tar(path: Path, max_total: int) -> dict[str, bytes]:
    source = str(path)
    plan = _Plan(source, max_total)
    archive_size = path.stat().st_size
    members: dict[str, tarfile.TarInfo] = {}
    dirs: list[str] = []
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:") as tar:
            # pass 1: headers only; nothing is read or kept before every member passes
            for count, member in enumerate(tar):
                if count >= MAX_MEMBERS * 2:
                    raise BundleError(f"{source}: more than {MAX_MEMBERS * 2} archive entries; this is not a bundle")
                if member.issparse() or any(k.startswith("GNU.sparse") for k in member.pax_headers):
                    raise BundleError(f"{source}: sparse member {member.name!r}; bundle archives may hold only plain files")
                if member.isdir():
                    name = _check_member_name(member.name, source) if PurePosixPath(member.name).parts else "."
                    if name != ".":
                        dirs.append(name)
                    continue
                if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
                    raise BundleError(f"{source}: bundle archives may hold only files ({member.name})")
                if member.offset_data + member.size > archive_size:
                    raise BundleError(f"{source} is truncated: member {member.name} claims {member.size} bytes, more than the archive holds")
                members[plan.add(member.name, member.size)] = member
            if not _ends_with_marker(path, tar.offset):
                # tarfile stops quietly where a cut archive ends: without this a cut bundle reads as "signature missing"
                raise BundleError(f"{source} is truncated or not a tar: it ends at byte {archive_size} without the tar end-of-archive "
                                  "marker (an interrupted download or copy?)")
            # pass 2: manifest and signature, then only what the manifest lists
            for name in (MANIFEST, SIGNATURE):
                if name in members:
                    files[name] = _read_member(tar, members[name], name, source)
            if MANIFEST not in files:
                return files
            listed = plan.allowed(files[MANIFEST])
            plan.check_dirs(dirs, listed)
            for name, member in members.items():
                if name not in files:
                    files[name] = _read_member(tar, member, name, source)
    except (tarfile.TarError, EOFError) as exc:
        raise BundleError(f"{path} is truncated or not a tar (not a readable bundle archive: {exc})") from exc
    return files


def _ends_with_marker(path: Path, offset: int) -> bool:
    """A complete tar has a zero block (the end-of-archive marker) right after its last member."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        block = fh.read(tarfile.BLOCKSIZE)
    return len(block) == tarfile.BLOCKSIZE and not block.strip(b"\0")


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, name: str, source: str) -> bytes:
    fh = tar.extractfile(member)
    if fh is None:
        raise BundleError(f"{source}: member {name} has no content")
    with fh:
        return _read_exact(fh, member.size, name, source)


def open_bundle(path: str | os.PathLike[str], *, max_total_bytes: int | None = None, source: str | None = None) -> Bundle:
    """Read a bundle folder or ``.tar`` archive into memory, without trusting any of it.

    ``max_total_bytes`` lowers the cap on all files together (default ``MAX_TOTAL_BYTES``);
    ``source`` names the bundle in errors instead of its path (e.g. an upload's temp file).
    """
    if source is not None:
        try:
            bundle = open_bundle(path, max_total_bytes=max_total_bytes)
        except BundleError as exc:
            cls = VerificationError if isinstance(exc, VerificationError) else BundleError
            raise cls(str(exc).replace(os.fspath(path), source, 1)) from exc.__cause__
        bundle.source = source
        return bundle
    p = Path(path)
    if not p.exists():
        raise BundleError(f"{p}: no such bundle (expected a bundle folder or .tar archive)")
    cap = MAX_TOTAL_BYTES if max_total_bytes is None else min(max_total_bytes, MAX_TOTAL_BYTES)
    try:
        files = _read_dir(p, cap) if p.is_dir() else _read_tar(p, cap)
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


def verify(bundle: Bundle, public_key: Ed25519PublicKey, *, allow_partial: bool = False) -> VerifiedManifest:
    """Check signature, format, then every artifact; return the now-trusted manifest (the only way to get a
    :class:`~edgefleet.manifest.VerifiedManifest`).

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
            f"{bundle.source}: unsupported bundle format {_short(manifest.get('format'))} "
            f"version {_short(manifest.get('format_version'))}; this edgefleet reads {FORMAT_NAME} v{FORMAT_VERSION}"
        )
    validate_manifest(manifest, bundle.source)
    listed = set()
    present = 0
    for art in manifest["artifacts"]:
        rel = _check_member_name(art["path"], bundle.source)
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
    extra = sorted(n for n in bundle.files if n not in listed and n not in (MANIFEST, SIGNATURE))
    if extra:
        raise VerificationError(f"{bundle.source}: files not listed in the signed manifest: {', '.join(extra)}")
    return _issue(manifest)


def validate_manifest(manifest: Any, source: str = "manifest.json") -> dict[str, Any]:
    """Refuse a manifest that breaks the schema, naming the field; return it unchanged."""
    try:
        return check_manifest(manifest)
    except ManifestError as exc:
        raise BundleError(f"{source}: malformed manifest: {exc}") from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _claimed_key_id(manifest_bytes: bytes) -> str | None:
    try:
        value = json.loads(manifest_bytes).get("key_id")
    except (ValueError, AttributeError, RecursionError):
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
