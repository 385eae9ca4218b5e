"""Initial schema: capture, aggregation, delivery and state tables (see spool/schema.py).

Revision ID: 0001_initial
Revises: 
Create Date: 2026-11-21 22:51:41.675722
"""
from alembic import op
import sqlalchemy as sa


revision = '0001_initial'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('cursors',
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('value', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('errors',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sqlite_autoincrement=True
    )
    with op.batch_alter_table('errors', schema=None) as batch_op:
        batch_op.create_index('ix_errors_at', ['at'], unique=False)

    op.create_table('kv',
    sa.Column('key', sa.Text(), nullable=False),
    sa.Column('value', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('key')
    )
    op.create_table('pauses',
    sa.Column('project', sa.Text(), nullable=False),
    sa.Column('paused_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('project')
    )
    op.create_table('quarantine',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('raw_event_id', sa.Integer(), nullable=True),
    sa.Column('received_at', sa.Float(), nullable=False),
    sa.Column('quarantined_at', sa.Float(), nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('cwd', sa.Text(), nullable=True),
    sa.Column('payload', sa.BLOB(), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sqlite_autoincrement=True
    )
    with op.batch_alter_table('quarantine', schema=None) as batch_op:
        batch_op.create_index('ix_quarantine_at', ['quarantined_at'], unique=False)

    op.create_table('raw_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('received_at', sa.Float(), nullable=False),
    sa.Column('source', sa.Text(), server_default=sa.text("'hook'"), nullable=False),
    sa.Column('cwd', sa.Text(), nullable=True),
    sa.Column('payload', sa.BLOB(), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('truncated', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('dedup_key', sa.Text(), nullable=True),
    sa.Column('status', sa.Text(), server_default=sa.text("'new'"), nullable=False),
    sa.Column('session_id', sa.Text(), nullable=True),
    sa.Column('turn_id', sa.Text(), nullable=True),
    sa.Column('event', sa.Text(), nullable=True),
    sa.Column('late', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('dedup_key'),
    sqlite_autoincrement=True
    )
    with op.batch_alter_table('raw_events', schema=None) as batch_op:
        batch_op.create_index('ix_raw_events_new', ['id'], unique=False, sqlite_where=sa.text("status = 'new'"))
        batch_op.create_index('ix_raw_events_received', ['received_at'], unique=False)
        batch_op.create_index('ix_raw_events_session', ['session_id', 'id'], unique=False)

    op.create_table('sessions',
    sa.Column('session_id', sa.Text(), nullable=False),
    sa.Column('project', sa.Text(), nullable=True),
    sa.Column('cwd', sa.Text(), nullable=True),
    sa.Column('transcript_path', sa.Text(), nullable=True),
    sa.Column('model', sa.Text(), nullable=True),
    sa.Column('permission_mode', sa.Text(), nullable=True),
    sa.Column('source', sa.Text(), nullable=True),
    sa.Column('first_event_at', sa.Float(), nullable=False),
    sa.Column('last_event_at', sa.Float(), nullable=False),
    sa.Column('last_event_id', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('state', sa.Text(), server_default=sa.text("'open'"), nullable=False),
    sa.Column('ended_at', sa.Float(), nullable=True),
    sa.Column('summary_revision', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('summarised_through_id', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('event_count', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('late_event_count', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('rollout_offset', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('codex_version', sa.Text(), nullable=True),
    sa.Column('git_branch', sa.Text(), nullable=True),
    sa.Column('git_commit', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('session_id')
    )
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.create_index('ix_sessions_last', ['last_event_at'], unique=False)
        batch_op.create_index('ix_sessions_open', ['last_event_at'], unique=False, sqlite_where=sa.text("state != 'final'"))

    op.create_table('sink_state',
    sa.Column('sink', sa.Text(), nullable=False),
    sa.Column('paused', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('held_reason', sa.Text(), nullable=True),
    sa.Column('updated_at', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('sink')
    )
    op.create_table('traces',
    sa.Column('trace_id', sa.Text(), nullable=False),
    sa.Column('kind', sa.Text(), nullable=False),
    sa.Column('session_id', sa.Text(), nullable=True),
    sa.Column('turn_id', sa.Text(), nullable=True),
    sa.Column('revision', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('supersedes', sa.Text(), nullable=True),
    sa.Column('project', sa.Text(), nullable=True),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('started_at', sa.Float(), nullable=True),
    sa.Column('ended_at', sa.Float(), nullable=True),
    sa.Column('event_count', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('trace_id')
    )
    with op.batch_alter_table('traces', schema=None) as batch_op:
        batch_op.create_index('ix_traces_created', ['created_at'], unique=False)
        batch_op.create_index('ix_traces_session', ['session_id'], unique=False)

    op.create_table('outbox',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('trace_id', sa.Text(), nullable=False),
    sa.Column('sink', sa.Text(), nullable=False),
    sa.Column('state', sa.Text(), server_default=sa.text("'pending'"), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('first_attempt_at', sa.Float(), nullable=True),
    sa.Column('next_attempt_at', sa.Float(), nullable=False),
    sa.Column('lease_owner', sa.Text(), nullable=True),
    sa.Column('lease_until', sa.Float(), nullable=True),
    sa.Column('last_status', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('held_reason', sa.Text(), nullable=True),
    sa.Column('sent_at', sa.Float(), nullable=True),
    sa.Column('response_id', sa.Text(), nullable=True),
    sa.Column('updated_at', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['trace_id'], ['traces.trace_id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('trace_id', 'sink', name='uq_outbox_trace_sink'),
    sqlite_autoincrement=True
    )
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index('ix_outbox_due', ['next_attempt_at'], unique=False, sqlite_where=sa.text("state IN ('pending', 'failed', 'in_flight')"))
        batch_op.create_index('ix_outbox_state', ['state'], unique=False)
        batch_op.create_index('ix_outbox_trace', ['trace_id'], unique=False)

    op.create_table('turns',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('session_id', sa.Text(), nullable=False),
    sa.Column('turn_id', sa.Text(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('opened_at', sa.Float(), nullable=False),
    sa.Column('closed_at', sa.Float(), nullable=True),
    sa.Column('state', sa.Text(), server_default=sa.text("'open'"), nullable=False),
    sa.Column('trace_id', sa.Text(), nullable=True),
    sa.Column('traced_through_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['session_id'], ['sessions.session_id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('session_id', 'turn_id', name='uq_turns_session_turn'),
    sqlite_autoincrement=True
    )
    with op.batch_alter_table('turns', schema=None) as batch_op:
        batch_op.create_index('ix_turns_pending', ['state'], unique=False, sqlite_where=sa.text("state != 'traced'"))

    op.create_table('delivery_attempts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('outbox_id', sa.Integer(), nullable=False),
    sa.Column('trace_id', sa.Text(), nullable=False),
    sa.Column('sink', sa.Text(), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.Float(), nullable=False),
    sa.Column('duration_ms', sa.Float(), nullable=True),
    sa.Column('http_status', sa.Integer(), nullable=True),
    sa.Column('outcome', sa.Text(), nullable=False),
    sa.Column('error_class', sa.Text(), nullable=True),
    sa.Column('message', sa.Text(), nullable=True),
    sa.Column('response_id', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['outbox_id'], ['outbox.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sqlite_autoincrement=True
    )
    with op.batch_alter_table('delivery_attempts', schema=None) as batch_op:
        batch_op.create_index('ix_attempts_outbox', ['outbox_id'], unique=False)
        batch_op.create_index('ix_attempts_started', ['started_at'], unique=False)
        batch_op.create_index('ix_attempts_failed', ['started_at'], unique=False, sqlite_where=sa.text("outcome != 'sent'"))



def downgrade() -> None:
    with op.batch_alter_table('delivery_attempts', schema=None) as batch_op:
        batch_op.drop_index('ix_attempts_failed')
        batch_op.drop_index('ix_attempts_started')
        batch_op.drop_index('ix_attempts_outbox')

    op.drop_table('delivery_attempts')
    with op.batch_alter_table('turns', schema=None) as batch_op:
        batch_op.drop_index('ix_turns_pending', sqlite_where=sa.text("state != 'traced'"))

    op.drop_table('turns')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_trace')
        batch_op.drop_index('ix_outbox_state')
        batch_op.drop_index('ix_outbox_due', sqlite_where=sa.text("state IN ('pending', 'failed', 'in_flight')"))

    op.drop_table('outbox')
    with op.batch_alter_table('traces', schema=None) as batch_op:
        batch_op.drop_index('ix_traces_session')
        batch_op.drop_index('ix_traces_created')

    op.drop_table('traces')
    op.drop_table('sink_state')
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.drop_index('ix_sessions_open', sqlite_where=sa.text("state != 'final'"))
        batch_op.drop_index('ix_sessions_last')

    op.drop_table('sessions')
    with op.batch_alter_table('raw_events', schema=None) as batch_op:
        batch_op.drop_index('ix_raw_events_session')
        batch_op.drop_index('ix_raw_events_received')
        batch_op.drop_index('ix_raw_events_new', sqlite_where=sa.text("status = 'new'"))

    op.drop_table('raw_events')
    with op.batch_alter_table('quarantine', schema=None) as batch_op:
        batch_op.drop_index('ix_quarantine_at')

    op.drop_table('quarantine')
    op.drop_table('pauses')
    op.drop_table('kv')
    with op.batch_alter_table('errors', schema=None) as batch_op:
        batch_op.drop_index('ix_errors_at')

    op.drop_table('errors')
    op.drop_table('cursors')
