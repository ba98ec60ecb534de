"""Alembic environment: uses the connection handed over by ``fleet_server.db.init_db``."""

from alembic import context

from fleet_server.db import Base
from fleet_server.monitoring import tables as _monitoring_tables  # noqa: F401 - its tables join Base.metadata

target_metadata = Base.metadata
connection = context.config.attributes.get("connection")
if connection is None:  # `alembic` CLI use: build an engine from the ini's URL
    from fleet_server.db import make_engine

    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("alembic: set sqlalchemy.url in the ini file (or run `edgefleet server --db URL`, which migrates)")
    connection = make_engine(url).connect()
context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
