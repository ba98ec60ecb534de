"""Storage: SQLAlchemy 2 models, on SQLite by default and PostgreSQL in production.

Rows hold what must survive a restart: registered bundles (the archive itself lives in the
content-addressed artifact folder), devices and their reported state, enrollment tokens,
signed assignments (the desired state per device), rollouts and their per-device targets,
and ingested telemetry (idempotent by message id). The schema is created and upgraded by
Alembic (``fleet_server/migrations``); ``init_db`` runs ``upgrade head``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), index=True)
    version: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    key_id: Mapped[str] = mapped_column(String(16))
    formats: Mapped[list[Any]] = mapped_column(JSON)
    variants: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # format -> {sha256, size} of a slim bundle
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)
    provenance: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    uploaded_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class EnrollmentToken(Base):
    __tablename__ = "enrollment_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    group: Mapped[str] = mapped_column(String(128), default="default")
    tags: Mapped[list[Any]] = mapped_column(JSON, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime)
    used_by: Mapped[str | None] = mapped_column(String(128), nullable=True)


class Device(Base):
    __tablename__ = "devices"

    device_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    group: Mapped[str] = mapped_column(String(128), default="default", index=True)
    tags: Mapped[list[Any]] = mapped_column(JSON, default=list)
    enrolled_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_seen: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    capabilities: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    active_model: Mapped[str | None] = mapped_column(String(128), nullable=True)
    active_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    health: Mapped[str | None] = mapped_column(String(512), nullable=True)
    last_install: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    status: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Assignment(Base):
    """The newest row per device is its desired state; older rows are history."""

    __tablename__ = "assignments"
    __table_args__ = (Index("ix_assign_device_serial", "device_id", "serial"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.device_id"))
    serial: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(32))
    rollback: Mapped[bool] = mapped_column(Boolean, default=False)
    rollout_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    envelope: Mapped[dict[str, Any]] = mapped_column(JSON)
    issued_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Rollout(Base):
    __tablename__ = "rollouts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    selector: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    steps: Mapped[list[Any]] = mapped_column(JSON)
    gates: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(32), default="running", index=True)
    step_index: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    history: Mapped[list[Any]] = mapped_column(JSON, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class RolloutTarget(Base):
    __tablename__ = "rollout_targets"
    __table_args__ = (UniqueConstraint("rollout_id", "device_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id"), index=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.device_id"))
    order: Mapped[int] = mapped_column(BigInteger)  # 48-bit stable pseudo-random rank
    step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    state: Mapped[str] = mapped_column(String(32), default="pending")  # pending|assigned|installed|failed|incapable|rolled_back
    format: Mapped[str | None] = mapped_column(String(32), nullable=True)
    previous_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    assigned_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    done_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


class TelemetryRecord(Base):
    __tablename__ = "telemetry"
    __table_args__ = (Index("ix_tel_kind_model", "kind", "model", "model_version"), Index("ix_tel_entity", "entity_id"))

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the device's message id: ingest is idempotent
    device_id: Mapped[str] = mapped_column(String(128))  # not indexed: no reader looks telemetry up by device alone (0004)
    kind: Mapped[str] = mapped_column(String(16))
    created: Mapped[float] = mapped_column(Float)
    received_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    model: Mapped[str | None] = mapped_column(String(128), nullable=True)
    model_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    entity_id: Mapped[str | None] = mapped_column(String(256), nullable=True)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    label: Mapped[str | None] = mapped_column(String(64), nullable=True)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)


class ApiKey(Base):
    """A read-only API key of one kind (``scores:read``: the call-centre score lookup); only its sha256 is stored."""

    __tablename__ = "api_keys"

    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(16), unique=True)  # the key's public prefix, shown in lists and logs
    kind: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


class Counter(Base):
    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


def make_engine(url: str) -> Engine:
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    # Pool sizes: the server's threads (serve.HTTP_THREADS = 32 waitress threads, the reconciler,
    # the ingest worker, the monitor) each hold one connection while they query. A connection
    # beyond ``pool_size`` is closed when returned, so with SQLAlchemy's SQLite default (5 + 10)
    # a rollout's 1,000 artifact GETs opened and closed a SQLite connection (and ran its PRAGMAs)
    # for most requests, and at most 15 could query at once. Kept connections cost a file handle
    # each on SQLite; on PostgreSQL, 40 at most per server process (its default max_connections is 100).
    kw: dict[str, Any] = {"future": True}
    if url.startswith("sqlite"):
        kw["connect_args"] = {"check_same_thread": False, "timeout": 30}
        from sqlalchemy.engine import make_url

        db = make_url(url).database or ""
        if db and db != ":memory:" and "mode=memory" not in url:  # a file: QueuePool (memory uses one connection per thread)
            kw.update(pool_size=40, max_overflow=24)
    else:
        kw.update(pool_size=16, max_overflow=24, pool_pre_ping=True)
    engine = create_engine(url, **kw)
    if url.startswith("sqlite"):
        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _rec: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()
    return engine


def init_db(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision."""
    from pathlib import Path

    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def session_factory(engine: Engine) -> sessionmaker[Any]:
    factory = sessionmaker(engine, expire_on_commit=False, future=True)
    event.listen(factory, "before_commit", _flush_counters)
    event.listen(factory, "after_rollback", lambda s: s.info.pop("counters", None))
    return factory


def bump_counter(session: Any, name: str, n: int = 1) -> None:
    """Count ``n`` more of ``name`` when this transaction commits (and never if it rolls back).

    The increments are applied at commit as one upsert per counter, in name order: an atomic
    ``INSERT ... ON CONFLICT DO UPDATE SET value = value + n`` loses no concurrent increment (a
    read-modify-write did, and raced on a counter's first insert), and one lock order for every
    transaction cannot deadlock on PostgreSQL.
    """
    pending = session.info.setdefault("counters", {})
    pending[name] = pending.get(name, 0) + n


def _flush_counters(session: Any) -> None:
    pending = session.info.pop("counters", None)
    if not pending:
        return
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    table: Table = Counter.__table__  # type: ignore[assignment]  # a mapped class's table is a Table
    for name in sorted(pending):
        stmt = insert(table).values(name=name, value=pending[name])
        session.execute(stmt.on_conflict_do_update(index_elements=["name"], set_={"value": table.c.value + stmt.excluded.value}))
