"""model_requests and usage_hours: per-request usage and cost, for `spool usage`.

Backfills both from the bodies of the traces already stored (spool.usage.backfill),
so an existing spool reports its history right after the upgrade.

Revision ID: 0004_model_requests
Revises: 0003_raw_events_facts
Create Date: 2026-11-29 09:40:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0004_model_requests'
down_revision = '0003_raw_events_facts'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('model_requests',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('session_id', sa.Text(), nullable=False),
    sa.Column('turn_id', sa.Text(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('trace_id', sa.Text(), nullable=True),
    sa.Column('at', sa.Float(), nullable=False),
    sa.Column('model', sa.Text(), nullable=True),
    sa.Column('input', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('cached', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('cache_write', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('output', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('reasoning', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('total', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('cost_usd', sa.Float(), nullable=True),
    sa.Column('project', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('session_id', 'turn_id', 'seq', name='uq_model_requests_key'),
    sqlite_autoincrement=True
    )
    op.create_index('ix_model_requests_at', 'model_requests', ['at'], unique=False)
    op.create_table('usage_hours',
    sa.Column('hour', sa.Integer(), nullable=False),
    sa.Column('session_id', sa.Text(), nullable=False),
    sa.Column('model', sa.Text(), nullable=False),
    sa.Column('project', sa.Text(), nullable=False),
    sa.Column('requests', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('input', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('cached', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('cache_write', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('output', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('reasoning', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('total', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('cost_usd', sa.Float(), server_default=sa.text('0'), nullable=False),
    sa.Column('unpriced', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.UniqueConstraint('hour', 'session_id', 'model', 'project', name='uq_usage_hours_key')
    )
    op.create_index('ix_usage_hours_session', 'usage_hours', ['session_id'], unique=False)
    from spool import usage

    usage.backfill(op.get_bind().connection.driver_connection)


def downgrade() -> None:
    op.drop_index('ix_usage_hours_session', table_name='usage_hours')
    op.drop_table('usage_hours')
    op.drop_index('ix_model_requests_at', table_name='model_requests')
    op.drop_table('model_requests')
