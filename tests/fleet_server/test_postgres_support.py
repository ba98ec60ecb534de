"""The throw-away PostgreSQL server of tests/support/postgres.py, exercised end to end.

A real server (initdb + pg_ctl, run as the `postgres` user when the tests run as root), reached
with SQLAlchemy 2 + psycopg 3 over TCP with a password. Nothing is mocked or skipped.
"""

from __future__ import annotations

import time
from pathlib import Path

import sqlalchemy as sa

from tests.support.postgres import PostgresServer, port_open, postgres_url  # noqa: F401

N_ROWS = 10_000
BATCH = 1_000


def test_server_roundtrip_and_clean_stop(tmp_path: Path) -> None:
    t0 = time.monotonic()
    server = PostgresServer(tmp_path).start()
    startup = time.monotonic() - t0
    try:
        assert startup < 10, f"server took {startup:.1f} s to start"
        assert server.url.startswith(f"postgresql+psycopg://{server.user}:")
        assert server.url.endswith(f"@127.0.0.1:{server.port}/{server.database}")
        port, root = server.port, server.root
        assert port is not None and root is not None and port_open(port)

        engine = sa.create_engine(server.url)
        meta = sa.MetaData()
        readings = sa.Table(
            "readings", meta,
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("device", sa.String(32), nullable=False, index=True),
            sa.Column("score", sa.Float, nullable=False),
        )
        try:
            with engine.begin() as conn:
                assert conn.execute(sa.text("select current_user, current_database()")).one() == (server.user, server.database)
                meta.create_all(conn)
            rows = [{"id": i, "device": f"dev-{i % 97}", "score": i / N_ROWS} for i in range(N_ROWS)]
            for start in range(0, N_ROWS, BATCH):
                with engine.begin() as conn:
                    conn.execute(readings.insert(), rows[start:start + BATCH])  # executemany
            with engine.connect() as conn:
                assert conn.execute(sa.select(sa.func.count()).select_from(readings)).scalar_one() == N_ROWS
                back = conn.execute(sa.select(readings).order_by(readings.c.id)).mappings().all()
            assert [dict(r) for r in back] == rows
        finally:
            engine.dispose()
    finally:
        server.stop()

    assert not port_open(port), f"127.0.0.1:{port} still accepts connections after stop()"
    assert not root.exists(), f"{root} was not removed"
    assert (tmp_path / f"postgres-{port}.log").exists()
    server.stop()  # idempotent


def test_wrong_password_is_refused(postgres_url: str) -> None:  # noqa: F811
    good = sa.create_engine(postgres_url)
    bad = sa.create_engine(sa.make_url(postgres_url).set(password="not-the-password"))
    try:
        with good.connect() as conn:
            assert conn.execute(sa.text("select 1")).scalar_one() == 1
        try:
            with bad.connect():
                raise AssertionError("a wrong password was accepted")
        except sa.exc.OperationalError as e:
            assert "password authentication failed" in str(e)
    finally:
        good.dispose()
        bad.dispose()
