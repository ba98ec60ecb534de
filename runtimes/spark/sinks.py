"""Where batch scores go: the operational database (SQLite or PostgreSQL) or a Parquet folder.

An output is a URL: ``postgresql://user:pw@host:port/db?table=churn_scores``,
``sqlite:///path/scores.db?table=churn_scores`` or ``parquet:///path/dir`` (a plain folder path
works too). For a database, ``table`` (default ``scores``) names four tables:

    churn_scores           latest score per (model, entity_id): what the call centre reads
    churn_scores_history   one row per (run_id, model, entity_id)
    churn_scores_rejects   rows the input schema refused: (run_id, model, entity_id, reason)
    churn_scores_runs      one row per run: model, version, bundle sha256, started/finished, counts

Idempotence by run id: a run's rows carry ``scored_at`` = the run's first start (kept in the runs
table), history and rejects insert ``ON CONFLICT DO NOTHING``, and ``latest`` is replaced only by a
strictly newer ``(scored_at, run_id)``. So a batch written twice changes nothing, a run killed
half-way and re-run with its id fills exactly the missing rows, and an older run re-run after a
newer one never overwrites the newer scores. Every batch is one transaction: PostgreSQL loads it
with ``COPY`` into a temporary staging table, then ``INSERT ... SELECT ... ON CONFLICT``; SQLite
does the same with ``executemany`` into a temp table (WAL, a 60 s busy timeout, since several
Python workers write to one file).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sqlite3
from dataclasses import dataclass
from typing import Any, Iterable, Sequence
from urllib.parse import parse_qs, unquote, urlsplit

from edgefleet.errors import InputError

TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,40}$")
DEFAULT_TABLE = "scores"
SCORE_COLUMNS = ("run_id", "entity_id", "model", "model_version", "bundle_sha256", "probability", "label", "scored_at")


@dataclass(frozen=True)
class Output:
    """A parsed ``--output``: kind is ``postgresql``, ``sqlite`` or ``parquet``."""

    kind: str
    url: str  # for databases: the URL without ?table= (psycopg conninfo / sqlite path in ``path``)
    table: str = DEFAULT_TABLE
    path: str = ""

    @property
    def tables(self) -> dict[str, str]:
        t = self.table
        return {"latest": t, "history": f"{t}_history", "rejects": f"{t}_rejects", "runs": f"{t}_runs"}

    def describe(self) -> str:
        if self.kind == "parquet":
            return f"parquet folder {self.path}"
        where = self.path if self.kind == "sqlite" else _redacted(self.url)
        return f"{self.kind} {where}, table {self.table} (latest; history {self.table}_history, rejects {self.table}_rejects)"


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url


def parse_output(text: str, option: str = "--output") -> Output:
    """``--output`` (or ``--scores-db``) -> Output; ``InputError`` names the option and the reason."""
    parts = urlsplit(text)
    scheme = parts.scheme.split("+")[0].lower()
    query = parse_qs(parts.query)
    table = query.get("table", [DEFAULT_TABLE])[-1]
    if not TABLE_NAME.match(table):
        raise InputError(option, f"table {table!r} is not a plain SQL name (letters, digits, _; at most 41 characters)")
    base = text.split("?", 1)[0]
    if scheme in ("postgresql", "postgres"):
        return Output("postgresql", "postgresql://" + base.split("://", 1)[1], table)
    if scheme == "sqlite":
        path = unquote(base[len(parts.scheme) + 3:])  # after "sqlite://": "/rel" or "//abs" (SQLAlchemy's URL form)
        path = path[1:] if path.startswith("/") else path
        if not path:
            raise InputError(option, "a sqlite URL needs a file: sqlite:///scores.db")
        return Output("sqlite", base, table, os.path.abspath(path))
    if scheme == "parquet":
        return Output("parquet", text, table, os.path.abspath(unquote(base[len("parquet://"):]) or "."))
    if not parts.scheme:
        return Output("parquet", text, table, os.path.abspath(text))
    raise InputError(option, f"{text!r}: use postgresql://.../db?table=T, sqlite:///file.db?table=T or parquet:///dir")


def _ddl(kind: str, t: dict[str, str]) -> list[str]:
    ts = "TIMESTAMPTZ" if kind == "postgresql" else "TEXT"
    real = "DOUBLE PRECISION" if kind == "postgresql" else "REAL"
    cols = (f"run_id TEXT NOT NULL, entity_id TEXT NOT NULL, model TEXT NOT NULL, model_version INTEGER NOT NULL, "
            f"bundle_sha256 TEXT NOT NULL, probability {real} NOT NULL, label TEXT, scored_at {ts} NOT NULL")
    return [
        f"CREATE TABLE IF NOT EXISTS {t['latest']} ({cols}, PRIMARY KEY (model, entity_id))",
        f"CREATE TABLE IF NOT EXISTS {t['history']} ({cols}, PRIMARY KEY (run_id, model, entity_id))",
        f"CREATE TABLE IF NOT EXISTS {t['rejects']} (run_id TEXT NOT NULL, model TEXT NOT NULL, entity_id TEXT NOT NULL, "
        f"reason TEXT NOT NULL, PRIMARY KEY (run_id, model, entity_id, reason))",
        f"CREATE TABLE IF NOT EXISTS {t['runs']} (run_id TEXT PRIMARY KEY, model TEXT NOT NULL, model_version INTEGER NOT NULL, "
        f"bundle_sha256 TEXT NOT NULL, started_at {ts} NOT NULL, finished_at {ts}, input TEXT, master TEXT, "
        f"rows_scored BIGINT, rows_rejected BIGINT, seconds {real})",
    ]


def _upsert_sql(kind: str, t: dict[str, str]) -> list[str]:
    cols = ", ".join(SCORE_COLUMNS)
    newer = f"({t['latest']}.scored_at, {t['latest']}.run_id) < (excluded.scored_at, excluded.run_id)"
    sets = ", ".join(f"{c} = excluded.{c}" for c in SCORE_COLUMNS if c not in ("model", "entity_id"))
    # PostgreSQL refuses to update one row twice in a statement: one row per key (the first) goes to latest;
    # SQLite applies rows in order and the strict "newer" test keeps the first as well.
    pick = "DISTINCT ON (model, entity_id) " if kind == "postgresql" else ""
    order = " ORDER BY model, entity_id, n" if kind == "postgresql" else " WHERE true ORDER BY n"
    return [
        f"INSERT INTO {t['history']} ({cols}) SELECT {cols} FROM stage_scores WHERE true ORDER BY n ON CONFLICT DO NOTHING",
        f"INSERT INTO {t['latest']} ({cols}) SELECT {pick}{cols} FROM stage_scores{order} "
        f"ON CONFLICT (model, entity_id) DO UPDATE SET {sets} WHERE {newer}",
        f"INSERT INTO {t['rejects']} (run_id, model, entity_id, reason) SELECT run_id, model, entity_id, reason FROM stage_rejects "
        f"WHERE true ON CONFLICT DO NOTHING",
    ]


class DatabaseSink:
    """One connection per Python worker (cached in :mod:`runtimes.spark.worker`); ``write`` is one transaction."""

    def __init__(self, out: Output) -> None:
        self.out = out
        self.kind = out.kind
        self.t = out.tables
        try:
            if self.kind == "postgresql":
                import psycopg

                self.conn: Any = psycopg.connect(out.url, autocommit=False, connect_timeout=10)
                ts, real = "TIMESTAMPTZ", "DOUBLE PRECISION"
            else:
                self.conn = sqlite3.connect(out.path, timeout=60, isolation_level=None)
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=NORMAL")
                ts, real = "TEXT", "REAL"
        except Exception as exc:  # noqa: BLE001 - psycopg and sqlite3 raise their own types; one line naming the output
            raise InputError("--output", f"cannot open {out.describe()}: {' '.join(str(exc).split())[:300]}") from exc
        self._stage = [
            f"CREATE TEMP TABLE IF NOT EXISTS stage_scores (n INTEGER, run_id TEXT, entity_id TEXT, model TEXT, model_version INTEGER, "
            f"bundle_sha256 TEXT, probability {real}, label TEXT, scored_at {ts})",
            "CREATE TEMP TABLE IF NOT EXISTS stage_rejects (run_id TEXT, model TEXT, entity_id TEXT, reason TEXT)",
        ]
        self._upsert = _upsert_sql(self.kind, self.t)

    def create_tables(self) -> None:
        self._run_in_tx(_ddl(self.kind, self.t))

    def _run_in_tx(self, statements: Sequence[str], params: Sequence[Any] = ()) -> None:
        if self.kind == "postgresql":
            with self.conn.cursor() as cur:
                for s in statements:
                    cur.execute(s, params or None)
            self.conn.commit()
        else:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                for s in statements:
                    self.conn.execute(s, params)
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise

    def write(self, scores: Sequence[tuple[Any, ...]], rejects: Sequence[tuple[str, str, str, str]]) -> None:
        """``scores``: tuples in SCORE_COLUMNS order; ``rejects``: (run_id, model, entity_id, reason). One transaction."""
        if not scores and not rejects:
            return
        numbered = [(i, *row) for i, row in enumerate(scores)]
        if self.kind == "postgresql":
            with self.conn.cursor() as cur:
                for s in self._stage:
                    cur.execute(s)
                cur.execute("TRUNCATE stage_scores, stage_rejects")
                with cur.copy("COPY stage_scores (n, run_id, entity_id, model, model_version, bundle_sha256, probability, label, "
                              "scored_at) FROM STDIN") as cp:
                    for row in numbered:
                        cp.write_row(row)
                with cur.copy("COPY stage_rejects (run_id, model, entity_id, reason) FROM STDIN") as cp:
                    for rej in rejects:
                        cp.write_row(rej)
                for s in self._upsert:
                    cur.execute(s)
            self.conn.commit()
            return
        c = self.conn
        for s in self._stage:
            c.execute(s)
        c.execute("BEGIN IMMEDIATE")
        try:
            c.execute("DELETE FROM stage_scores")
            c.execute("DELETE FROM stage_rejects")
            c.executemany("INSERT INTO stage_scores VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                          [(*r[:-1], _sqlite_ts(r[-1])) for r in numbered])
            c.executemany("INSERT INTO stage_rejects VALUES (?, ?, ?, ?)", rejects)
            for s in self._upsert:
                c.execute(s)
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    # -- the runs table (driver side) ---------------------------------------------------------
    def start_run(self, run_id: str, model: str, version: int, sha256: str, started: dt.datetime, source: str,
                  master: str) -> dt.datetime:
        """Record the run (first start wins) and return its ``scored_at``; a run id of another bundle is refused."""
        runs = self.t["runs"]
        ph = "%s" if self.kind == "postgresql" else "?"
        started_v: Any = started if self.kind == "postgresql" else _sqlite_ts(started)
        self._run_in_tx([f"INSERT INTO {runs} (run_id, model, model_version, bundle_sha256, started_at, input, master) "
                         f"VALUES ({', '.join([ph] * 7)}) ON CONFLICT (run_id) DO NOTHING"],
                        (run_id, model, version, sha256, started_v, source, master))
        row = self.fetchone(f"SELECT model, model_version, bundle_sha256, started_at FROM {runs} WHERE run_id = {ph}", (run_id,))
        assert row is not None
        if (row[0], int(row[1]), row[2]) != (model, version, sha256):
            raise InputError("--run-id", f"run {run_id!r} scored {row[0]} v{row[1]} (bundle sha256 {row[2][:12]}...), not {model} "
                                         f"v{version} ({sha256[:12]}...): a run id names one bundle; choose a new one")
        return row[3] if isinstance(row[3], dt.datetime) else parse_ts(str(row[3]))

    def finish_run(self, run_id: str, rows: int, rejected: int, seconds: float, finished: dt.datetime) -> None:
        runs = self.t["runs"]
        ph = "%s" if self.kind == "postgresql" else "?"
        fin: Any = finished if self.kind == "postgresql" else _sqlite_ts(finished)
        self._run_in_tx([f"UPDATE {runs} SET finished_at = {ph}, rows_scored = {ph}, rows_rejected = {ph}, seconds = {ph} "
                         f"WHERE run_id = {ph}"], (fin, rows, rejected, seconds, run_id))

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self.fetchall(sql, params)
        return rows[0] if rows else None

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        if self.kind == "postgresql":
            with self.conn.cursor() as cur:
                cur.execute(sql, params or None)
                got = list(cur.fetchall())
            self.conn.commit()
            return got
        return list(self.conn.execute(sql, params).fetchall())

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001 - closing a dead connection at exit
            pass


def _sqlite_ts(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value


def parse_ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def reject_rows(run_id: str, model: str, items: Iterable[tuple[str | None, str]]) -> list[tuple[str, str, str, str]]:
    return [(run_id, model, "" if e is None else e, reason) for e, reason in items]
