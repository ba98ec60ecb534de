"""Secrets the server generates on first start; there are no defaults anywhere.

``<data_dir>/secrets/`` (mode 0700) holds ``admin-token`` (the bearer token for every admin
endpoint), ``server-key.pem`` (Ed25519: signs device assignments; devices get its public key at
enrollment) and ``mqtt-server-password`` (the server's own broker account). The first start
prints where they are. Tokens are compared by sha256 in constant time; device tokens are stored
only as hashes.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgefleet import keys


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same_token(token: str, stored_hash: str) -> bool:
    return hmac.compare_digest(token_hash(token), stored_hash)


def _secret_file(path: Path, make: bytes) -> tuple[bytes, bool]:
    if path.exists():
        return path.read_bytes(), False
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(make)
    return make, True


@dataclass
class ServerSecrets:
    dir: Path
    admin_token: str
    mqtt_password: str
    signing_key: Ed25519PrivateKey
    created: bool

    @property
    def signing_key_id(self) -> str:
        return keys.key_id(self.signing_key.public_key())

    @classmethod
    def load_or_create(cls, data_dir: Path) -> "ServerSecrets":
        d = data_dir / "secrets"
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o700)
        admin, c1 = _secret_file(d / "admin-token", secrets.token_urlsafe(32).encode())
        mqtt_pw, c2 = _secret_file(d / "mqtt-server-password", secrets.token_urlsafe(24).encode())
        key_path = d / "server-key.pem"
        created = c1 or c2
        if not key_path.exists():
            keys.generate_keypair(d, overwrite=False)
            os.replace(d / "private.pem", key_path)
            os.replace(d / "public.pem", d / "server-key.pub.pem")
            created = True
        return cls(d, admin.decode().strip(), mqtt_pw.decode().strip(), keys.load_private_key(key_path), created)
