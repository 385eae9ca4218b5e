"""raw_events: the payload's session facts (cwd, transcript path, model, permission mode, source).

Ingest now stores them when it parses a row, so the index reads columns
instead of parsing payloads again.  Rows already parsed but not indexed yet
(above the ``aggregate`` cursor) get them here, from the same payload fields.

Revision ID: 0003_raw_events_facts
Revises: 0002_drop_ix_outbox_trace
Create Date: 2026-11-29 09:40:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0003_raw_events_facts'
down_revision = '0002_drop_ix_outbox_trace'
branch_labels = None
depends_on = None

FACTS = (('payload_cwd', 'cwd'), ('payload_transcript_path', 'transcript_path'),
         ('payload_model', 'model'), ('payload_permission_mode', 'permission_mode'),
         ('payload_source', 'source'))


def upgrade() -> None:
    for column, _key in FACTS:
        op.add_column('raw_events', sa.Column(column, sa.Text(), nullable=True))
    # A non-empty string, else NULL; the payload as text (a BLOB would be read as JSONB).
    sets = ", ".join(
        f"{column} = CASE WHEN json_type(CAST(payload AS TEXT), '$.{key}') = 'text'"
        f" AND json_extract(CAST(payload AS TEXT), '$.{key}') != ''"
        f" THEN json_extract(CAST(payload AS TEXT), '$.{key}') END"
        for column, key in FACTS if key != 'source')
    op.execute(
        f"UPDATE raw_events SET {sets},"
        " payload_source = CASE WHEN json_extract(CAST(payload AS TEXT), '$.hook_event_name')"
        " = 'SessionStart'"
        " AND json_type(CAST(payload AS TEXT), '$.source') = 'text'"
        " AND json_extract(CAST(payload AS TEXT), '$.source') != ''"
        " THEN json_extract(CAST(payload AS TEXT), '$.source') END"
        " WHERE status = 'ok' AND truncated = 0"
        " AND id > COALESCE((SELECT value FROM cursors WHERE name = 'aggregate'), 0)"
        " AND json_valid(CAST(payload AS TEXT))"
        " AND json_type(CAST(payload AS TEXT)) = 'object'")


def downgrade() -> None:
    with op.batch_alter_table('raw_events', schema=None) as batch_op:
        for column, _key in reversed(FACTS):
            batch_op.drop_column(column)
