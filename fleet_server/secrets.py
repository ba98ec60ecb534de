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
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgefleet import keys
from edgefleet.fsutil import atomic_write


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same_token(token: str, stored_hash: str) -> bool:
    return hmac.compare_digest(token_hash(token), stored_hash)


def _secret_file(path: Path, make: bytes) -> tuple[bytes, bool]:
    """The secret in ``path``, created with ``make`` if absent. Written whole to a temp file (0600, fsynced) and linked
    into place, so a reader never sees a torn secret and of two processes racing, one wins and both use its value."""
    if path.exists():
        return path.read_bytes(), False
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(make)
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, path)
    except FileExistsError:
        return path.read_bytes(), False
    finally:
        os.unlink(tmp)
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
            # Generated in a private temp folder and linked into place (link refuses to overwrite), so of two servers
            # starting on one data dir exactly one key wins, and the public half is written only by the winner.
            fresh = Path(tempfile.mkdtemp(dir=d, prefix=".keypair."))
            try:
                keys.generate_keypair(fresh, overwrite=False)
                os.link(fresh / "private.pem", key_path)
                atomic_write(d / "server-key.pub.pem", (fresh / "public.pem").read_bytes())
                created = True
            except FileExistsError:
                pass  # another process created the key first; use its key
            finally:
                shutil.rmtree(fresh, ignore_errors=True)
        return cls(d, admin.decode().strip(), mqtt_pw.decode().strip(), keys.load_private_key(key_path), created)
