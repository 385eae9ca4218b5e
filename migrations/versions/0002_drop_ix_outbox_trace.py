"""Drop ix_outbox_trace: the unique (trace_id, sink) index already serves trace_id lookups.

Every trace insert paid for it: it is keyed by random uuids, so each write
transaction rewrote about one page of it per trace (measured: 19 % of the bytes
a big aggregation pass writes, 12-14 % of its throughput).

Revision ID: 0002_drop_ix_outbox_trace
Revises: 0001_initial
Create Date: 2026-11-22 04:30:00
"""
from alembic import op


revision = '0002_drop_ix_outbox_trace'
down_revision = '0001_initial'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index('ix_outbox_trace', table_name='outbox')


def downgrade() -> None:
    op.create_index('ix_outbox_trace', 'outbox', ['trace_id'], unique=False)
