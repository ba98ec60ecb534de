"""The MiNiFi-style drop folder: score every ``*.jsonl`` and ``*.csv`` file, never stop on a bad one.

    <input_dir>/x.jsonl  ->  scored/x.jsonl (one JSON result line per record) and done/x.jsonl
    <input_dir>/x.csv    ->  scored/x.csv (one CSV result row per data row) and done/x.csv
                         ->  rejected/x.* and rejected/x.*.reason, when unreadable

Both formats are read by the one file rule of :mod:`edgefleet.encoding` (``file_record``):
extra fields are ignored, numbers given as strings are parsed strictly, and the entity id is kept
out of the features and sent with each prediction, so delayed outcomes can join it. The entity id
is ``"_entity_id"`` (a key in JSON Lines, a column in CSV) when the file has it, else the first
column (CSV) or the first key of the first record (JSON Lines) that is not a model input, such as
``customerID``: the rule of ``edgefleet score``.
A bad record gets an ``error`` naming the row and the field; the rest of the file still scores.
A file that cannot be read as records at all (not UTF-8, not a regular file, over
``MAX_INPUT_BYTES``, no line a JSON object, a CSV that is empty, ';'-delimited or lacks a
column the model takes, or any other kind of file) is moved to ``rejected/`` next to a
``<name>.reason`` file, so it neither stops the agent nor comes back on restart. Names starting
with ``.`` or ending in ``.tmp``/``.part`` are files still being written: they are left alone,
and so is any file modified less than ``MIN_FILE_AGE`` seconds ago, so a plain ``cp`` into the
folder is not read half-copied (as NiFi's GetFile "Minimum File Age").
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from edgefleet.encoding import ENTITY_KEY, delimiter_problem, file_record
from edgefleet.errors import EdgefleetError, InputError
from edgefleet.fsutil import atomic_write
from runtimes.python.scorer import Prediction

MAX_INPUT_BYTES = 64 * 1024 * 1024  # a drop-folder file larger than this is rejected unread
MIN_FILE_AGE = 1.0                  # seconds since a file's last change before it is read

log = logging.getLogger(__name__)

ScoreFn = Callable[[dict[str, Any], Any], Prediction]


class RejectedInput(Exception):
    """A drop-folder file that cannot be read as records; the message is the reason."""


IN_PROGRESS = (".tmp", ".part", ".partial")
_ROW_PREFIX = re.compile(r"^row \d+: ")  # the encoder numbers rows within its batch of one
Fields = Sequence[Mapping[str, Any]]


def score_folder(inbox: Path, score: ScoreFn, fields: Fields | None = None, min_age: float = MIN_FILE_AGE) -> tuple[int, list[tuple[str, str]]]:
    """Score every ``*.jsonl`` and ``*.csv`` in ``inbox``; returns (records scored, [(file, reason) rejected]).

    ``fields`` (the active manifest's input fields) applies the file rule; without it records go to ``score`` as read.
    """
    done, scored = inbox / "done", inbox / "scored"
    done.mkdir(parents=True, exist_ok=True)
    scored.mkdir(parents=True, exist_ok=True)
    n = 0
    rejected: list[tuple[str, str]] = []
    for path in sorted(inbox.iterdir()):
        name = path.name
        if name in ("done", "scored", "rejected") or name.startswith(".") or name.endswith(IN_PROGRESS):
            continue
        kind = path.suffix.lower()
        if kind not in (".jsonl", ".csv"):
            if path.is_file() or path.is_symlink():
                rejected.append((name, reject(path, f"{name}: the drop folder scores .jsonl and .csv files, and this is neither "
                                                    "(for Parquet use `edgefleet score --input FILE.parquet`)")))
            continue
        try:
            if min_age > 0 and time.time() - path.lstat().st_mtime < min_age:
                continue  # still being written (a plain cp); the next pass takes it
            text = read_input(path)
        except RejectedInput as exc:
            rejected.append((name, reject(path, str(exc))))
            continue
        except FileNotFoundError:
            continue  # taken away between listing and reading
        try:
            lines, count = (_score_csv if kind == ".csv" else _score_jsonl)(name, text, score, fields)
        except RejectedInput as exc:
            rejected.append((name, reject(path, str(exc))))
            continue
        n += count
        if kind == ".csv":
            atomic_write(scored / name, _csv_results(lines))
        else:
            atomic_write(scored / name, "".join(json.dumps(x) + "\n" for x in lines).encode())
        os.replace(path, done / name)
        errors = sum(1 for x in lines if "error" in x)
        log.info("inbox file %s scored: %d record(s), %d bad record(s)", name, len(lines) - errors, errors)
    return n, rejected


def entity_column(columns: Sequence[str], fields: Fields | None) -> str | None:
    """``_entity_id`` if present, else the first column that is not a model input (None when every column is one)."""
    if ENTITY_KEY in columns:
        return ENTITY_KEY
    if fields is None:
        return None
    inputs = {str(f["name"]) for f in fields}
    return next((c for c in columns if c not in inputs), None)


def _one(rec: dict[str, Any], where: str, score: ScoreFn, fields: Fields | None, id_col: str | None = ENTITY_KEY) -> dict[str, Any]:
    entity = rec.pop(id_col, None) if id_col is not None else None
    if entity is not None and not isinstance(entity, (str, int)):
        entity = str(entity)
    try:
        p = score(file_record(fields, rec) if fields is not None else rec, entity)
    except InputError as exc:
        return {"entity_id": entity, "error": f"{where}, field {exc.field!r}: {_ROW_PREFIX.sub('', exc.reason)}"[:500]}
    except (ValueError, TypeError, EdgefleetError) as exc:
        return {"entity_id": entity, "error": f"{where}: {exc}"[:500]}
    return {"entity_id": entity, "probability": p.probability, "label": p.label, "model_version": p.version}


def _score_jsonl(name: str, text: str, score: ScoreFn, fields: Fields | None) -> tuple[list[dict[str, Any]], int]:
    lines: list[dict[str, Any]] = []
    parsed = n = 0
    id_col: str | None = None
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
        if parsed == 0:
            id_col = entity_column(list(rec), fields)
        parsed += 1
        result = {"line": i + 1, **_one(rec, f"line {i + 1}", score, fields, id_col)}
        n += "error" not in result
        lines.append(result)
    if lines and not parsed:
        raise RejectedInput(f"no line of {name} is a JSON object (first: {lines[0]['error']})")
    return lines, n


def _score_csv(name: str, text: str, score: ScoreFn, fields: Fields | None) -> tuple[list[dict[str, Any]], int]:
    text = text.removeprefix("\ufeff")
    header_line = text.split("\n", 1)[0]
    if not header_line.strip():
        raise RejectedInput(f"{name} is empty")
    problem = delimiter_problem(name, header_line)
    if problem:
        raise RejectedInput(problem)
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader)
        if fields is not None:
            missing = [str(f["name"]) for f in fields if f["name"] not in header]
            if missing:
                raise RejectedInput(f"{name} has no column {', '.join(map(repr, missing[:8]))} (the model takes: "
                                    f"{', '.join(str(f['name']) for f in fields)})")
        lines: list[dict[str, Any]] = []
        n = 0
        id_col = entity_column(header, fields)
        for i, cells in enumerate(reader, start=1):
            if not cells:
                continue
            if len(cells) != len(header):
                lines.append({"row": i, "error": f"row {i}: {len(cells)} cells, the header has {len(header)}"})
                continue
            result = {"row": i, **_one(dict(zip(header, cells)), f"row {i}", score, fields, id_col)}
            n += "error" not in result
            lines.append(result)
    except csv.Error as exc:
        raise RejectedInput(f"{name} is not readable CSV: {exc}") from exc
    return lines, n


def _csv_results(lines: list[dict[str, Any]]) -> bytes:
    out = io.StringIO()
    cols = ["row", "entity_id", "probability", "label", "model_version", "error"]
    w = csv.writer(out, lineterminator="\n")
    w.writerow(cols)
    w.writerows([["" if x.get(c) is None else x[c] for c in cols] for x in lines])
    return out.getvalue().encode()


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
