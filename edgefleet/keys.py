"""Ed25519 signing keys for bundles.

``edgefleet keys generate --out DIR`` writes ``private.pem`` (mode 0600) and ``public.pem``.
A key id is the first 16 hex digits of the sha256 of the raw 32-byte public key; manifests
name it so a verifier holding several trusted keys knows which one to use.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edgefleet.errors import KeyFileError, VerificationError

__all__ = ["generate_keypair", "key_id", "load_private_key", "load_public_key", "public_key_from_pem", "sign", "verify_signature"]


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keypair(out_dir: str | os.PathLike[str], *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write a new key pair into ``out_dir``; refuse to overwrite an existing private key."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    priv_path, pub_path = out / "private.pem", out / "public.pem"
    if priv_path.exists() and not overwrite:
        raise KeyFileError(f"{priv_path} already exists; refusing to overwrite a signing key")
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    pub_path.write_bytes(
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return priv_path, pub_path


def _read(path: str | os.PathLike[str], what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    data = _read(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} holds a {type(key).__name__}, not an Ed25519 private key")
    return key


def public_key_from_pem(data: bytes | str, source: str = "key") -> Ed25519PublicKey:
    """The one PEM public-key loader: ``KeyFileError`` naming ``source`` unless it is Ed25519."""
    try:
        key = serialization.load_pem_public_key(data.encode() if isinstance(data, str) else data)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{source} is not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{source} holds a {type(key).__name__}, not an Ed25519 public key")
    return key


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    return public_key_from_pem(_read(path, "public key"), str(path))


def sign(private_key: Ed25519PrivateKey, data: bytes) -> bytes:
    return private_key.sign(data)


def verify_signature(public_key: Ed25519PublicKey, signature: bytes, data: bytes) -> None:
    try:
        public_key.verify(signature, data)
    except InvalidSignature as exc:
        raise VerificationError(
            f"signature does not match the manifest for public key {key_id(public_key)}: "
            "the manifest was changed after signing, or it was signed by another key"
        ) from exc
