"""retired_sessions: what retention deleted, so a re-import does not bring it back.

Retention deletes a delivered session's events, traces and (mostly) its sessions
row; the Codex rollout it came from stays on disk.  ``spool import`` of that
rollout would then insert the session again and deliver its traces a second time.
A row here (the session and the time of its last event) tells the import that
its turns up to then were traced and delivered already.

Revision ID: 0007_retired_sessions
Revises: 0006_usage_days
Create Date: 2026-11-29 18:20:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0007_retired_sessions'
down_revision = '0006_usage_days'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('retired_sessions',
    sa.Column('session_id', sa.Text(), nullable=False),
    sa.Column('last_event_at', sa.Float(), nullable=False),
    sa.Column('retired_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('session_id')
    )


def downgrade() -> None:
    op.drop_table('retired_sessions')
