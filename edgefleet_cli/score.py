"""``edgefleet score``: score a file of records offline with a verified bundle.

    edgefleet score BUNDLE --pubkey public.pem --input customers.csv --output scores.parquet [--id-column customerID]

Input: CSV, JSON Lines or Parquet (``edgefleet_cli.data``), read by the one file rule of
:mod:`edgefleet.encoding` (extra fields ignored, numbers given as text parsed strictly).
Output format: ``--format``, else the output's extension (``.csv``, ``.jsonl``/``.ndjson``,
``.parquet``), else JSON Lines on stdout. Each input row gives one output row: the id column,
``row`` (CSV/Parquet: the data row, 1-based; JSON Lines: the line number), ``probability``,
``label``, ``model_version``, ``backend`` and, for a row the schema refuses, ``error`` naming
the row, the field and the reason (the rest still scores). The id column is ``--id-column``, else
``_entity_id`` when the input has it, else the first input column that is neither a model input
nor the model's label; the summary line says which.

Rows are scored in chunks of ``CHUNK_ROWS``; output goes to a temp file beside ``--output``
and is renamed into place at the end, so a failed run leaves no half-written file. A progress
line is drawn on stderr when stderr is a terminal (not when results go to that same terminal),
and printed every 100,000 rows otherwise; the final summary (rows scored, rows rejected,
seconds, output) goes to stderr. Exit status 0 when at least one row scored; 1 when none could.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from edgefleet.encoding import ENTITY_KEY, FileRule
from edgefleet.errors import InputError
from edgefleet_cli.data import CHUNK_ROWS, Chunk, RecordFile, ResultWriter, check_output, format_of, pyarrow_parquet

RESULT_COLUMNS = ("row", "probability", "label", "model_version", "backend", "error")
_ROW_PREFIX = re.compile(r"^row \d+: ")
PLAIN_PROGRESS_EVERY = 100_000


def output_format(output: str | None, fmt: str | None) -> str:
    if fmt:
        return fmt
    if output is None:
        return "jsonl"
    found = format_of(output)
    if found is None:
        suffix = Path(output).suffix or "(none)"
        raise InputError("--output", f"{output}: unknown extension {suffix}; use .csv, .jsonl, .ndjson or .parquet, or pass --format csv|jsonl|parquet")
    return found


def pick_id_column(columns: list[str], inputs: set[str], label: str | None, given: str | None) -> tuple[str | None, str]:
    """(id column, why it was chosen) for the summary line."""
    if given is not None:
        if given in RESULT_COLUMNS:
            raise InputError("--id-column", f"{given!r} is also a result column ({', '.join(RESULT_COLUMNS)}); rename it in the input")
        if columns and given not in columns:
            raise InputError("--id-column", f"the input has no column {given!r} (its columns: {_shown(columns)})")
        return given, "--id-column"
    if ENTITY_KEY in columns:
        return ENTITY_KEY, "the entity key"
    for c in columns:
        if c not in inputs and c != label and c not in RESULT_COLUMNS:
            return c, "the first input column that is not a model input; choose with --id-column"
    return None, "none: every input column is a model input"


def _shown(items: list[str], n: int = 8) -> str:
    return ", ".join(items[:n]) + (f" ... ({len(items)} in all)" if len(items) > n else "")


class _Progress:
    def __init__(self, source: RecordFile, to_stdout: bool, stream: TextIO = sys.stderr) -> None:
        self.stream, self.source = stream, source
        self.live = stream.isatty() and not (to_stdout and sys.stdout.isatty())
        self.next_plain = PLAIN_PROGRESS_EVERY
        self.started = time.perf_counter()
        self.drawn = False

    def update(self, rows: int) -> None:
        secs = time.perf_counter() - self.started
        if self.live:
            pct = 100.0 * self.source.bytes_read / self.source.size if self.source.size else 0.0
            self.stream.write(f"\rscoring {self.source.path}: {rows:,} rows ({pct:.0f} %), {rows / max(secs, 1e-9):,.0f} rows/s\033[K")
            self.stream.flush()
            self.drawn = True
        elif rows >= self.next_plain:
            print(f"scoring {self.source.path}: {rows:,} rows, {secs:.1f}s", file=self.stream, flush=True)
            self.next_plain = (rows // PLAIN_PROGRESS_EVERY + 1) * PLAIN_PROGRESS_EVERY

    def clear(self) -> None:
        if self.drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()


def _located(where: str, n: int, exc: InputError) -> str:
    return f"{where} {n}, field {exc.field!r}: {_ROW_PREFIX.sub('', exc.reason)}"


def score_chunk(scorer: Any, rule: FileRule, chunk: Chunk, id_col: str | None, where: str) -> list[dict[str, Any]]:
    """One result row per input row; rows the schema refuses carry ``error``."""
    from runtimes.python.errors import ScoringInputError

    out: list[dict[str, Any]] = []
    good: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for n, raw in chunk.rows:
        entry: dict[str, Any] = {id_col: raw.get(id_col) if isinstance(raw, dict) else None} if id_col else {}
        entry["row"] = n
        if isinstance(raw, str):
            entry["error"] = raw
        else:
            try:
                good.append((entry, rule(raw)))
            except InputError as exc:
                entry["error"] = _located(where, n, exc)
        out.append(entry)
    if not good:
        return out
    common = {"model_version": scorer.version, "backend": scorer.backend_name}
    try:
        preds = scorer.score_many([rec for _, rec in good])
    except ScoringInputError:  # some record breaks the schema: score one by one to name it and keep the rest
        for entry, rec in good:
            try:
                p = scorer.score(rec)
            except ScoringInputError as exc:
                entry["error"] = _located(where, entry["row"], exc)
            else:
                entry.update(probability=p.probability, label=p.label, **common)
        return out
    for (entry, _), p in zip(good, preds):
        entry.update(probability=p.probability, label=p.label, **common)
    return out


def run(args: argparse.Namespace) -> int:
    from runtimes.python import Scorer

    started = time.perf_counter()
    fmt = output_format(args.output, args.format)
    if fmt == "parquet":
        pyarrow_parquet("writing", "--output")
        if not args.output:
            raise InputError("--format", "Parquet output needs --output FILE.parquet (it cannot go to stdout)")
    out_path = check_output(args.output) if args.output else None
    source = RecordFile(args.input)
    scorer = Scorer.from_bundle(args.bundle, args.pubkey, backend=args.backend)
    inputs = {f["name"] for f in scorer.fields}
    rule = FileRule(scorer.fields)
    if source.format != "jsonl":
        missing = [f["name"] for f in scorer.fields if f["name"] not in source.columns]
        if missing:
            raise InputError(missing[0], f"{args.input} has no column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} "
                                         f"(its columns: {_shown(source.columns)})")
    label = (scorer.manifest.get("source") or {}).get("label")
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp") if out_path else None
    progress = _Progress(source, to_stdout=out_path is None)
    writer: ResultWriter | None = None
    pending: list[dict[str, Any]] = []  # stdout: nothing is printed before a row scores (an unreadable file prints nothing)
    id_col: str | None = None
    why = ""
    scored = rejected = 0
    first_error = ""
    try:
        for chunk in source.chunks(CHUNK_ROWS):
            if writer is None:
                id_col, why = pick_id_column(source.columns, inputs, label, args.id_column)
                writer = ResultWriter(fmt, ([id_col] if id_col else []) + list(RESULT_COLUMNS), None if tmp else sys.stdout, tmp,
                                      keep=(id_col,) if id_col else (), label_values=scorer.classes)
            results = score_chunk(scorer, rule, chunk, id_col, source.where)
            bad = [r for r in results if "error" in r]
            rejected += len(bad)
            scored += len(results) - len(bad)
            first_error = first_error or (bad[0]["error"] if bad else "")
            if scored == 0 and tmp is None:
                pending.extend(results)
            else:
                writer.write(pending + results)
                pending = []
            progress.update(scored + rejected)
        progress.clear()
        if scored == 0 and rejected:
            raise InputError("--input", f"no row of {args.input} could be scored ({rejected:,} rejected); first: {first_error}")
        if writer is None:
            raise InputError("--input", f"{args.input} is empty: it holds no records")
        writer.close()
        writer = None
        if tmp is not None and out_path is not None:
            os.replace(tmp, out_path)
    except BaseException:
        progress.clear()
        if writer is not None and tmp is not None:
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - the first error is the one to report
                pass
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise
    secs = time.perf_counter() - started
    note = f"; first rejected: {first_error}" if rejected else ""
    print(f"scored {scored:,} rows, rejected {rejected:,}, in {secs:.1f}s with {scorer.name} v{scorer.version} ({scorer.backend_name}) "
          f"-> {out_path or 'stdout'} ({fmt}); id column: {id_col or 'none'} ({why}){note}", file=sys.stderr)
    return 0
