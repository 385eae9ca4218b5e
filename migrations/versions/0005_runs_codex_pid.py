"""Runs and the Codex process: raw_events and sessions get run_id, codex_pid, codex_start.

The hook stores SPOOL_RUN_ID and the pid/start time of the Codex process it runs under in
the row it writes; the index copies them onto the session (``spool sessions --run``, the
sweep's "codex exited" check).  Existing rows have none (NULL): nothing to backfill.

Revision ID: 0005_runs_codex_pid
Revises: 0004_model_requests
Create Date: 2026-11-29 10:45:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0005_runs_codex_pid'
down_revision = '0004_model_requests'
branch_labels = None
depends_on = None

COLUMNS = (('run_id', sa.Text), ('codex_pid', sa.Integer), ('codex_start', sa.Integer))


def upgrade() -> None:
    for table in ('raw_events', 'sessions'):
        for name, type_ in COLUMNS:
            op.add_column(table, sa.Column(name, type_(), nullable=True))
    op.create_index('ix_sessions_run', 'sessions', ['run_id'], unique=False,
                    sqlite_where=sa.text('run_id IS NOT NULL'))


def downgrade() -> None:
    op.drop_index('ix_sessions_run', table_name='sessions')
    for table in ('sessions', 'raw_events'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            for name, _type in reversed(COLUMNS):
                batch_op.drop_column(name)
