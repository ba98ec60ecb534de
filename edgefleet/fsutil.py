"""The one atomic write: temp file in the destination's folder, fsync, ``os.replace``, fsync the folder.

A crash leaves the old content or the new, never a mix, and never a stray temp file that a
later write trips over: the temp name is unique (``mkstemp``) and is removed when anything
fails before the swap. Used for the device's model store, outbox state, the server's artifact
files and Mosquitto's password/ACL files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["atomic_write", "fsync_dir"]


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (POSIX needs the folder itself synced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes | str, *, mode: int | None = None, owner: str | None = None) -> None:
    """Replace ``path`` with ``data`` atomically; ``mode``/``owner`` are applied before the swap."""
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        if owner is not None:
            shutil.chown(tmp, user=owner)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
