"""Files in and out of the CLI: the model and sample ``compile`` reads, the records ``score`` reads and writes.

Formats are picked by extension (``.csv``; ``.jsonl``/``.ndjson``/``.json``; ``.parquet``/``.pq``)
and, for input, by a look at the first bytes when the extension says nothing. Records are read
in chunks (``CHUNK_ROWS``), so a million rows never sit in memory at once. Every problem with a
file is one :class:`~edgefleet.errors.InputError` (score) or
:class:`~compiler.errors.CompileError` (compile) line naming the file and the reason: a missing
file, a file that is empty, ';'-delimited, not UTF-8, or Parquet without pyarrow installed.
Parquet needs pyarrow, which no install brings but ``edgefleet[parquet]`` (170 MB installed: too
large for the ``[device]`` footprint).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterator, Sequence

from edgefleet.encoding import delimiter_problem
from edgefleet.errors import InputError

CHUNK_ROWS = 10_000
FORMATS = ("csv", "jsonl", "parquet")
_BY_SUFFIX = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
PARQUET_HINT = "install it with: pip install 'edgefleet[parquet]'"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def format_of(path: str) -> str | None:
    return _BY_SUFFIX.get(Path(path).suffix.lower())


def pyarrow_parquet(what: str, option: str) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(option, f"{what} Parquet needs pyarrow, which is not installed; {PARQUET_HINT}") from None
    return pq


# -- compile: the model and the sample ------------------------------------------------------------
def load_model(path: str, feature_names: str | None = None, classes: str | None = None) -> Any:
    from compiler.errors import CompileError

    p = Path(path)
    if p.is_dir() and (p / "metadata").is_dir() and (p / "stages").is_dir():  # a saved Spark ML PipelineModel
        from compiler.frontends.spark import SparkPipeline

        return SparkPipeline.load(p)
    if not p.is_file():
        raise CompileError(f"model file {path} does not exist" if not p.exists() else f"model file {path} is not a file")
    with open(p, "rb") as fh:
        head = fh.read(8)
    names = [n.strip() for n in feature_names.split(",")] if feature_names else None
    if p.suffix.lower() in (".h5", ".hdf5") or head == HDF5_MAGIC:
        raise CompileError(f"{path} is a legacy HDF5 (.h5) Keras file, which edgefleet does not read: load it in Keras and save it "
                           "as .keras (model.save(\"m.keras\")), then compile m.keras with --feature-names")
    if p.suffix == ".keras":  # a .keras file knows neither its column names nor its class labels
        from compiler.frontends.keras import KerasModel

        if not names:
            raise CompileError(f"{path} is a Keras model: pass --feature-names (the sample columns it takes, in order)")
        labels = [c.strip() for c in (classes or "0,1").split(",")]
        parsed: list[Any] = [int(c) for c in labels] if all(c.lstrip("-").isdigit() for c in labels) else labels
        return KerasModel.load(p, names, parsed)
    try:
        import joblib

        model = joblib.load(p)
    except Exception as exc:  # pickle can raise anything: EOFError, UnpicklingError, ModuleNotFoundError...
        raise CompileError(f"cannot load model file {path} (expected a joblib or pickle file of a fitted scikit-learn model): {type(exc).__name__}: {exc}") from exc
    if names:
        _name_columns(model, names, path)
    return model


def _name_columns(model: Any, names: list[str], path: str) -> None:
    """--feature-names for a scikit-learn model fitted on a numpy array: give it the column names it lacks."""
    import numpy as np

    from compiler.errors import CompileError

    have = getattr(model, "feature_names_in_", None)
    if have is not None:
        if [str(n) for n in have] != names:
            raise CompileError(f"--feature-names: {path} was fitted with column names already ({', '.join(map(str, have))}); drop --feature-names")
        return
    first = model.steps[0][1] if hasattr(model, "steps") else model
    n = getattr(model, "n_features_in_", None) or getattr(first, "n_features_in_", None)
    if n is not None and int(n) != len(names):
        raise CompileError(f"--feature-names gives {len(names)} names but {path} was fitted on {int(n)} columns")
    first.feature_names_in_ = np.array(names, dtype=object)


def load_sample(path: str) -> Any:
    """A compile sample as a DataFrame: CSV, JSON Lines or Parquet; empty and ';'-delimited files named."""
    import pandas as pd

    from compiler.errors import CompileError

    p = Path(path)
    if p.is_dir() and (p / "metadata").is_dir() and (p / "stages").is_dir():  # a saved Spark ML PipelineModel
        from compiler.frontends.spark import SparkPipeline

        return SparkPipeline.load(p)
    if not p.is_file():
        raise CompileError(f"sample file {path} does not exist" if not p.exists() else f"sample {path} is not a file")
    fmt = format_of(path) or sniff_format(p)
    if p.stat().st_size == 0:
        raise CompileError(f"sample {path} is empty (0 bytes)")
    try:
        if fmt == "jsonl":
            frame = pd.read_json(p, lines=True)
        elif fmt == "parquet":
            try:
                pyarrow_parquet("reading", "--sample")
            except InputError as exc:
                raise CompileError(f"--sample {path}: {exc.reason}") from None
            frame = pd.read_parquet(p)
        else:
            header = first_line(p)
            problem = delimiter_problem(f"sample {path}", header)
            if problem:
                raise CompileError(problem)
            frame = pd.read_csv(p)
    except UnicodeDecodeError as exc:
        raise CompileError(f"sample {path} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except pd.errors.EmptyDataError:
        raise CompileError(f"sample {path} is empty") from None
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise CompileError(f"cannot read sample {path}: {' '.join(str(exc).split())}") from exc
    if frame.empty:
        raise CompileError(f"sample {path} is empty: it has a header ({len(frame.columns)} columns) and no rows")
    return frame


def first_line(p: Path) -> str:
    with open(p, encoding="utf-8-sig", newline="") as fh:
        return fh.readline(1 << 20)


def sniff_format(p: Path) -> str:
    """No telling extension: Parquet by its magic bytes, JSON Lines by a leading '{', else CSV."""
    try:
        with open(p, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return "csv"
    if head.startswith(b"PAR1"):
        return "parquet"
    return "jsonl" if head.lstrip().startswith(b"{") else "csv"


# -- score: records in -------------------------------------------------------------------------
@dataclass
class Chunk:
    """Up to CHUNK_ROWS records: (row number, the record or why it cannot be one)."""

    rows: list[tuple[int, dict[str, Any] | str]]


class RecordFile:
    """An input file of records; ``columns`` are known up front for CSV and Parquet (JSON Lines: from the first record)."""

    def __init__(self, path: str) -> None:
        self.path = path
        p = Path(path)
        if not p.exists():
            raise InputError("--input", f"{path} does not exist")
        if not p.is_file():
            raise InputError("--input", f"{path} is not a file")
        self.size = p.stat().st_size
        if self.size == 0:
            raise InputError("--input", f"{path} is empty (0 bytes)")
        self.format = format_of(path) or sniff_format(p)
        if self.format != "parquet" and sniff_format(p) == "parquet":
            raise InputError("--input", f"{path} is a Parquet file: name it .parquet")
        self.where = "line" if self.format == "jsonl" else "row"
        self.columns: list[str] = []
        self.bytes_read = 0
        if self.format == "parquet":
            self._pq = pyarrow_parquet("reading", "--input").ParquetFile(path)
            self.columns = list(self._pq.schema_arrow.names)
        elif self.format == "csv":
            try:
                header = first_line(p)
            except UnicodeDecodeError as exc:
                raise InputError("--input", f"{path} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
            problem = delimiter_problem(path, header)
            if problem:
                raise InputError("--input", problem)
            self.columns = next(csv.reader([header]), [])
            if not any(c.strip() for c in self.columns):
                raise InputError("--input", f"{path} is empty: its first line holds no column names")

    def chunks(self, rows: int = CHUNK_ROWS) -> Iterator[Chunk]:
        try:
            if self.format == "parquet":
                yield from self._parquet(rows)
            else:
                with open(self.path, encoding="utf-8-sig", newline="") as fh:
                    yield from (self._jsonl(fh, rows) if self.format == "jsonl" else self._csv(fh, rows))
        except UnicodeDecodeError as exc:
            raise InputError("--input", f"{self.path} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
        except csv.Error as exc:
            raise InputError("--input", f"{self.path} is not readable CSV: {exc}") from None
        except OSError as exc:
            raise InputError("--input", f"cannot read {self.path}: {exc.strerror or exc}") from None

    def _counted(self, fh: IO[str]) -> Iterator[str]:
        for line in fh:
            self._chars += len(line)
            yield line

    def _csv(self, fh: IO[str], rows: int) -> Iterator[Chunk]:
        self._chars = 0
        reader = csv.reader(self._counted(fh))
        header = next(reader, None) or []
        width = len(header)
        out: list[tuple[int, dict[str, Any] | str]] = []
        for n, cells in enumerate(reader, start=1):
            if not cells:
                continue
            if len(cells) != width:
                out.append((n, f"row {n}: {len(cells)} cells, the header has {width}"))
            else:
                out.append((n, dict(zip(header, cells))))
            if len(out) >= rows:
                self.bytes_read = self._chars  # characters: close enough to bytes for a progress display
                yield Chunk(out)
                out = []
        self.bytes_read = self.size
        if out:
            yield Chunk(out)

    def _jsonl(self, fh: IO[str], rows: int) -> Iterator[Chunk]:
        out: list[tuple[int, dict[str, Any] | str]] = []
        read = 0
        for n, line in enumerate(fh, start=1):
            read += len(line)
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                out.append((n, f"line {n} is not JSON: {exc}"))
            except RecursionError:
                out.append((n, f"line {n} is nested too deeply to be a record"))
            else:
                if isinstance(rec, dict):
                    out.append((n, rec))
                    if not self.columns:
                        self.columns = [str(k) for k in rec]
                else:
                    out.append((n, f"line {n}: expected a JSON object, got {type(rec).__name__}"))
            if len(out) >= rows:
                self.bytes_read = read
                yield Chunk(out)
                out = []
        self.bytes_read = self.size
        if out:
            yield Chunk(out)

    def _parquet(self, rows: int) -> Iterator[Chunk]:
        n = 0
        total = max(1, self._pq.metadata.num_rows)
        for batch in self._pq.iter_batches(batch_size=rows):
            recs = batch.to_pylist()
            yield Chunk([(n + i + 1, r) for i, r in enumerate(recs)])
            n += len(recs)
            self.bytes_read = int(self.size * n / total)


# -- score: results out ------------------------------------------------------------------------
def check_output(path: str) -> Path:
    """The output file's folder exists and is writable: checked before anything is scored."""
    p = Path(path)
    if p.is_dir():
        raise InputError("--output", f"cannot write {path}: it is a folder (give a file name, e.g. {p / 'scores.jsonl'})")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise InputError("--output", f"cannot write {path}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise InputError("--output", f"cannot write {path}: the folder {parent} is not writable")
    return p


class ResultWriter:
    """Writes result rows as CSV, JSON Lines or Parquet, in chunks."""

    def __init__(self, fmt: str, columns: Sequence[str], stream: IO[str] | None, path: Path | None, *,
                 keep: Sequence[str] = (), label_values: Sequence[Any] = ()) -> None:
        """``keep``: JSON Lines columns written even when null (the id); ``label_values`` types Parquet's label column."""
        self.format, self.columns, self.path, self.keep = fmt, list(columns), path, set(keep)
        self.label_values = list(label_values)
        self._pq: Any = None
        self._schema: Any = None
        if fmt == "parquet":
            if path is None:
                raise InputError("--format", "Parquet output needs --output FILE.parquet (it cannot go to stdout)")
            self._pa = pyarrow_parquet("writing", "--output")
            import pyarrow

            self._pyarrow = pyarrow
            self._fh: IO[Any] | None = None
        else:
            self._fh = stream if stream is not None else open(path, "w", encoding="utf-8", newline="")  # type: ignore[arg-type]
            if fmt == "csv":
                self._csv = csv.writer(self._fh, lineterminator="\n")
                self._csv.writerow(self.columns)

    def write(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        if self.format == "jsonl":
            assert self._fh is not None
            keep = self.keep
            self._fh.write("".join(json.dumps({k: v for k, v in r.items() if v is not None or k in keep}, default=str) + "\n" for r in rows))
        elif self.format == "csv":
            self._csv.writerows([["" if r.get(c) is None else r[c] for c in self.columns] for r in rows])
        else:
            self._write_parquet(rows)

    def _write_parquet(self, rows: list[dict[str, Any]]) -> None:
        pa = self._pyarrow
        cols = {c: [r.get(c) for r in rows] for c in self.columns}
        try:
            if self._schema is None:
                self._schema = pa.schema([(c, self._parquet_type(c, v)) for c, v in cols.items()])
                self._pq = self._pa.ParquetWriter(str(self.path), self._schema)
            table = pa.table({c: pa.array(v, type=self._schema.field(c).type) for c, v in cols.items()}, schema=self._schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
            raise InputError("--output", f"cannot write Parquet: a column changes type between rows ({exc}); use --format csv or jsonl") from None
        self._pq.write_table(table)

    def _parquet_type(self, column: str, values: list[Any]) -> Any:
        pa = self._pyarrow
        fixed = {"row": pa.int64(), "probability": pa.float64(), "model_version": pa.int64(), "backend": pa.string(), "error": pa.string()}
        if column in fixed:
            return fixed[column]
        found = pa.array(self.label_values if column == "label" and self.label_values else values).type
        return pa.string() if pa.types.is_null(found) else found

    def close(self) -> None:
        if self._pq is not None:
            self._pq.close()
        elif self.format == "parquet" and self.path is not None:  # no row at all: still a valid, empty file
            pa = self._pyarrow
            self._pa.write_table(pa.table({c: pa.array([], type=self._parquet_type(c, [])) for c in self.columns}), str(self.path))
        if self._fh is not None and self.path is not None:
            self._fh.close()
