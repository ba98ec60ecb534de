"""telemetry ingest shape (issue 13): drop the device_id index of the telemetry table

Every telemetry row paid for four B-trees: the table, the unique message id (the dedupe key),
(kind, model, model_version) and entity_id, and device_id. No reader looks telemetry up by device
alone: the rollout gates filter a (model, version) by device, which the (kind, model,
model_version) index narrows first; the monitor, the labeled export and the outcome join use the
other two. Dropping it is one index update less per stored message. The body is stored as
compact JSON text by fleet_server.ingest (no schema change: the column stays JSON).

Revision ID: 0004
Revises: 0003
"""
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('telemetry', schema=None) as batch_op:
        batch_op.drop_index('ix_telemetry_device_id')


def downgrade() -> None:
    with op.batch_alter_table('telemetry', schema=None) as batch_op:
        batch_op.create_index('ix_telemetry_device_id', ['device_id'], unique=False)
