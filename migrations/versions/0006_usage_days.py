"""usage_days: usage_hours summed per local day, model and project, for `spool usage`.

Built from usage_hours in the upgrading process's time zone, which it records in
kv['usage_days:zone'] (spool.usage.rebuild_days); a reader in another zone
answers from usage_hours, a writer in another zone rebuilds it.

Revision ID: 0006_usage_days
Revises: 0005_runs_codex_pid
Create Date: 2026-11-29 13:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0006_usage_days'
down_revision = '0005_runs_codex_pid'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('usage_days',
    sa.Column('day', sa.Text(), nullable=False),
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
    sa.UniqueConstraint('day', 'model', 'project', name='uq_usage_days_key')
    )
    from spool import usage

    usage.rebuild_days(op.get_bind().connection.driver_connection)


def downgrade() -> None:
    op.execute("DELETE FROM kv WHERE key = 'usage_days:zone'")
    op.drop_table('usage_days')
