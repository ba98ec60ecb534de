"""Write a bundle: artifacts, canonical manifest, detached Ed25519 signature, archive.

The folder is written next to its destination and swapped in with ``os.replace``, so a crash
never leaves a half-written bundle under the final name; the ``.tar`` beside it is the
deterministic transport form (``edgefleet.bundle_format.pack``).
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from compiler.targets import Artifact
from edgefleet import keys
from edgefleet.bundle_format import MANIFEST, SIGNATURE, canonical_json, pack, sha256_hex, validate_manifest
from edgefleet.fsutil import atomic_write


def artifact_entry(art: Artifact) -> dict[str, Any]:
    return {
        "format": art.format,
        "path": f"artifacts/{art.filename}",
        "sha256": sha256_hex(art.data),
        "size": len(art.data),
        "runtime": {"name": art.runtime, "min_version": art.runtime_min_version},
        "input_kind": art.input_kind,
        "inputs": art.inputs,
        "outputs": art.outputs,
        **({"notes": art.notes} if art.notes else {}),
        **({"quantization": art.quantization} if art.quantization else {}),
        **({"requires": art.requires} if art.requires else {}),
    }


def bundle_files(manifest: dict[str, Any], artifacts: list[Artifact], private_key: Ed25519PrivateKey) -> dict[str, bytes]:
    """Sign ``manifest``; a manifest that verification would refuse (bad name, version...) is never signed."""
    validate_manifest(manifest, f"bundle {manifest.get('name')!r} v{manifest.get('version')!r}")
    manifest_bytes = canonical_json(manifest)
    signature = base64.b64encode(keys.sign(private_key, manifest_bytes)) + b"\n"
    files = {MANIFEST: manifest_bytes, SIGNATURE: signature}
    files.update({f"artifacts/{a.filename}": a.data for a in artifacts})
    return files


def write_bundle(files: dict[str, bytes], out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write the folder atomically and ``<out_dir>.tar`` beside it; return both paths."""
    out = Path(out_dir).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name, data in files.items():
            path = tmp / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old.{os.getpid()}"
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    archive = out.with_name(out.name + ".tar")
    atomic_write(archive, pack(files))  # a unique temp name: two compiles into one folder cannot clobber each other's
    return out, archive
