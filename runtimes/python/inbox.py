"""The MiNiFi-style drop folder: score every ``*.jsonl`` file, never stop on a bad one.

    <input_dir>/x.jsonl  ->  scored/x.jsonl (one result line per record) and done/x.jsonl
                         ->  rejected/x.jsonl and rejected/x.jsonl.reason, when unreadable

A record may carry ``"_entity_id"`` (kept out of the features, used to join outcomes). A bad
record gets an ``error`` line naming the field; the rest of the file still scores. A file
that cannot be read as records at all (not UTF-8, not a regular file, over
``MAX_INPUT_BYTES``, or no line is a JSON object) is moved to ``rejected/`` next to a
``<name>.reason`` file, so it neither stops the agent nor comes back on restart.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable

from edgefleet.errors import EdgefleetError
from edgefleet.fsutil import atomic_write
from runtimes.python.scorer import Prediction

MAX_INPUT_BYTES = 64 * 1024 * 1024  # a drop-folder file larger than this is rejected unread

log = logging.getLogger(__name__)

ScoreFn = Callable[[dict[str, Any], Any], Prediction]


class RejectedInput(Exception):
    """A drop-folder file that cannot be read as records; the message is the reason."""


def score_folder(inbox: Path, score: ScoreFn) -> tuple[int, list[tuple[str, str]]]:
    """Score every ``*.jsonl`` in ``inbox``; returns (records scored, [(file, reason) rejected])."""
    done, scored = inbox / "done", inbox / "scored"
    done.mkdir(parents=True, exist_ok=True)
    scored.mkdir(parents=True, exist_ok=True)
    n = 0
    rejected: list[tuple[str, str]] = []
    for path in sorted(inbox.glob("*.jsonl")):
        try:
            text = read_input(path)
        except RejectedInput as exc:
            rejected.append((path.name, reject(path, str(exc))))
            continue
        except FileNotFoundError:
            continue  # taken away between listing and reading
        lines, parsed = [], 0
        for i, line in enumerate(text.splitlines()):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except (ValueError, RecursionError) as exc:
                lines.append({"line": i + 1, "error": f"record: not JSON ({str(exc)[:200]})"})
                continue
            if not isinstance(rec, dict):
                lines.append({"line": i + 1, "error": f"record: expected a JSON object, got {type(rec).__name__}"})
                continue
            parsed += 1
            try:
                entity = rec.pop("_entity_id", None)
                p = score(rec, entity)
                lines.append({"line": i + 1, "entity_id": entity, "probability": p.probability, "label": p.label, "model_version": p.version})
                n += 1
            except (ValueError, TypeError, EdgefleetError) as exc:
                lines.append({"line": i + 1, "error": str(exc)[:500]})
        if lines and not parsed:
            rejected.append((path.name, reject(path, f"no line of {path.name} is a JSON object (first: {lines[0]['error']})")))
            continue
        atomic_write(scored / path.name, "".join(json.dumps(x) + "\n" for x in lines).encode())
        os.replace(path, done / path.name)
        errors = sum(1 for x in lines if "error" in x)
        log.info("inbox file %s scored: %d record(s), %d bad record(s)", path.name, len(lines) - errors, errors)
    return n, rejected


def read_input(path: Path) -> str:
    if path.is_symlink() or not path.is_file():
        raise RejectedInput(f"{path.name} is not a regular file")
    size = path.stat().st_size
    if size > MAX_INPUT_BYTES:
        raise RejectedInput(f"{path.name} is {size} bytes, over the limit of {MAX_INPUT_BYTES}")
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RejectedInput(f"{path.name} is not UTF-8: byte {exc.start} is {data[exc.start:exc.start + 1]!r} ({exc.reason})") from exc


def reject(path: Path, reason: str) -> str:
    """Move ``path`` to ``rejected/`` with a ``<name>.reason`` file; returns the reason."""
    log.warning("inbox file %s rejected: %s", path.name, reason)
    rejected = path.parent / "rejected"
    rejected.mkdir(parents=True, exist_ok=True)
    atomic_write(rejected / f"{path.name}.reason", (reason + "\n").encode())
    try:
        os.replace(path, rejected / path.name)
    except OSError:  # e.g. a folder named *.jsonl over an existing one: never loop on it
        shutil.move(str(path), str(rejected / f"{path.name}.{uuid.uuid4().hex[:8]}"))
    return reason
