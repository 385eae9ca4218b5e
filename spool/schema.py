"""The spool database schema: SQLAlchemy Core tables, the single definition.

Alembic migrations in ``migrations/versions`` create exactly these tables
(``tests/test_schema.py`` compares a migrated database with this metadata), and
the hook's raw SQL in ``spool/hook.py`` is checked against them too.

Times are Unix epoch seconds as REAL (``time.time()``: microsecond
resolution), so SQL can compare them directly.
"""
from __future__ import annotations

from sqlalchemy import (
    BLOB,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    text,
)

# Pinned: tests/test_schema.py fails when a new revision is added without
# bumping this constant, so the code and the migrations move together.
HEAD_REVISION = "0007_retired_sessions"

metadata = MetaData()

# --- capture -------------------------------------------------------------

# Every hook invocation becomes one row, as received.  The hook fills only
# received_at/source/cwd/payload/size/truncated; the worker's parse step
# (spool.ingest) fills session_id/turn_id/event and the payload_* facts the
# index needs (so it never parses a payload), and sets status.
raw_events = Table(
    "raw_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("received_at", Float, nullable=False),
    Column("source", Text, nullable=False, server_default=text("'hook'")),  # hook|overflow|http
    Column("cwd", Text),
    Column("payload", BLOB, nullable=False),
    Column("size", Integer, nullable=False),  # original size in bytes, before any truncation
    Column("truncated", Integer, nullable=False, server_default=text("0")),
    Column("dedup_key", Text, unique=True),  # overflow/http records: ingest exactly once
    # new -> ok (parsed, an event) | quarantined (moved to quarantine)
    Column("status", Text, nullable=False, server_default=text("'new'")),
    Column("session_id", Text),
    Column("turn_id", Text),
    Column("event", Text),
    # The payload's session facts (non-empty strings, else NULL; SessionStart's
    # source only), read once by ingest for the index (spool.aggregate.index).
    Column("payload_cwd", Text),
    Column("payload_transcript_path", Text),
    Column("payload_model", Text),
    Column("payload_permission_mode", Text),
    Column("payload_source", Text),
    # Written by the hook from its own process: SPOOL_RUN_ID, and the Codex process it
    # runs under (pid, start time in clock ticks since boot: guards against pid reuse).
    Column("run_id", Text),
    Column("codex_pid", Integer),
    Column("codex_start", Integer),
    # Aggregation bookkeeping: which traces consumed this event is derived from
    # watermarks (turns.traced_through_id, sessions.summarised_through_id; see
    # spool.aggregate.EVENT_TRACES), so tracing never rewrites an event's row.
    # late: indexed after its turn was traced (set only for those rare rows).
    Column("late", Integer, nullable=False, server_default=text("0")),
    sqlite_autoincrement=True,
)
Index("ix_raw_events_new", raw_events.c.id, sqlite_where=text("status = 'new'"))
Index("ix_raw_events_session", raw_events.c.session_id, raw_events.c.id)
Index("ix_raw_events_received", raw_events.c.received_at)

# Bytes that were not a valid event: kept, with the reason.
quarantine = Table(
    "quarantine",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("raw_event_id", Integer),
    Column("received_at", Float, nullable=False),
    Column("quarantined_at", Float, nullable=False),
    Column("source", Text, nullable=False),
    Column("cwd", Text),
    Column("payload", BLOB, nullable=False),
    Column("size", Integer, nullable=False),
    Column("reason", Text, nullable=False),
    sqlite_autoincrement=True,
)
Index("ix_quarantine_at", quarantine.c.quarantined_at)

# --- sessions and turns ----------------------------------------------------

sessions = Table(
    "sessions",
    metadata,
    Column("session_id", Text, primary_key=True),
    Column("project", Text),  # project root (where .spool/ lives) or cwd
    Column("cwd", Text),
    Column("transcript_path", Text),
    Column("model", Text),
    Column("permission_mode", Text),
    Column("source", Text),  # startup|resume|compact
    Column("first_event_at", Float, nullable=False),
    Column("last_event_at", Float, nullable=False),
    Column("last_event_id", Integer, nullable=False, server_default=text("0")),
    # open -> ended (SessionEnd seen) -> final (finalised: summary made, or none
    # needed); a new event reopens it (state back to open).
    Column("state", Text, nullable=False, server_default=text("'open'")),
    Column("ended_at", Float),
    Column("summary_revision", Integer, nullable=False, server_default=text("0")),
    Column("summarised_through_id", Integer, nullable=False, server_default=text("0")),
    Column("event_count", Integer, nullable=False, server_default=text("0")),
    Column("late_event_count", Integer, nullable=False, server_default=text("0")),
    Column("rollout_offset", Integer, nullable=False, server_default=text("0")),
    Column("codex_version", Text),
    Column("git_branch", Text),
    Column("git_commit", Text),
    # SPOOL_RUN_ID of the session's events (sessions of one run belong together), and the
    # Codex process of its latest event that had one (the sweep finalises a session whose
    # Codex is gone: spool.aggregate.passes).
    Column("run_id", Text),
    Column("codex_pid", Integer),
    Column("codex_start", Integer),
)
Index("ix_sessions_run", sessions.c.run_id, sqlite_where=text("run_id IS NOT NULL"))
Index("ix_sessions_open", sessions.c.last_event_at, sqlite_where=text("state != 'final'"))
Index("ix_sessions_last", sessions.c.last_event_at)

turns = Table(
    "turns",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("session_id", Text, ForeignKey("sessions.session_id"), nullable=False),
    Column("turn_id", Text, nullable=False),  # Codex's turn_id, or a synthetic one
    Column("seq", Integer, nullable=False),  # 1.. within the session
    Column("opened_at", Float, nullable=False),
    Column("closed_at", Float),
    Column("state", Text, nullable=False, server_default=text("'open'")),  # open|closed|traced
    Column("trace_id", Text),
    # The turn trace (trace_id) holds this turn's 'ok' events with id <= this;
    # NULL when no turn trace was made for it (session granularity).
    Column("traced_through_id", Integer),
    UniqueConstraint("session_id", "turn_id", name="uq_turns_session_turn"),
    sqlite_autoincrement=True,
)
Index("ix_turns_pending", turns.c.state, sqlite_where=text("state != 'traced'"))

# --- traces and delivery ---------------------------------------------------

traces = Table(
    "traces",
    metadata,
    Column("trace_id", Text, primary_key=True),  # deterministic (uuid5)
    Column("kind", Text, nullable=False),  # turn|session|test
    Column("session_id", Text),
    Column("turn_id", Text),
    Column("revision", Integer, nullable=False, server_default=text("0")),
    Column("supersedes", Text),
    Column("project", Text),
    Column("name", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("ended_at", Float),
    Column("event_count", Integer, nullable=False, server_default=text("0")),
    Column("body", Text, nullable=False),  # the neutral trace model as JSON
)
Index("ix_traces_created", traces.c.created_at)
Index("ix_traces_session", traces.c.session_id)

OUTBOX_STATES = ("pending", "in_flight", "sent", "failed", "dead", "held")

outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("trace_id", Text, ForeignKey("traces.trace_id"), nullable=False),
    Column("sink", Text, nullable=False),
    Column("state", Text, nullable=False, server_default=text("'pending'")),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("created_at", Float, nullable=False),
    Column("first_attempt_at", Float),
    Column("next_attempt_at", Float, nullable=False),
    Column("lease_owner", Text),
    Column("lease_until", Float),
    Column("last_status", Integer),
    Column("last_error", Text),
    Column("held_reason", Text),
    Column("sent_at", Float),
    Column("response_id", Text),
    Column("updated_at", Float),
    UniqueConstraint("trace_id", "sink", name="uq_outbox_trace_sink"),
    sqlite_autoincrement=True,
)
# The claim query only ever looks at rows not yet finished: a partial index
# keeps it flat however many sent rows accumulate.
Index(
    "ix_outbox_due",
    outbox.c.next_attempt_at,
    sqlite_where=text("state IN ('pending', 'failed', 'in_flight')"),
)
Index("ix_outbox_state", outbox.c.state)
# Lookups by trace_id use uq_outbox_trace_sink (trace_id is its prefix).

delivery_attempts = Table(
    "delivery_attempts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("outbox_id", Integer, ForeignKey("outbox.id", ondelete="CASCADE"), nullable=False),
    Column("trace_id", Text, nullable=False),
    Column("sink", Text, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("duration_ms", Float),
    Column("http_status", Integer),
    Column("outcome", Text, nullable=False),  # sent|retry|dead|held
    Column("error_class", Text),
    Column("message", Text),
    Column("response_id", Text),
    sqlite_autoincrement=True,
)
Index("ix_attempts_outbox", delivery_attempts.c.outbox_id)
Index("ix_attempts_started", delivery_attempts.c.started_at)
# `spool errors` reads the newest failed attempts: a partial index keeps that
# flat however many successful attempts accumulate.
Index("ix_attempts_failed", delivery_attempts.c.started_at,
      sqlite_where=text("outcome != 'sent'"))

# --- usage and cost (owner: spool/usage.py) ----------------------------------

# One row per model request, as traced (from the trace bodies' model_request
# steps), priced at its time.  Keyed by (session_id, turn_id, seq): a turn's
# revision or its session summary re-records the same requests, never adds
# them twice.  seq 0 is a turn whose usage came from the rollout only.
model_requests = Table(
    "model_requests",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("session_id", Text, nullable=False),
    Column("turn_id", Text, nullable=False),
    Column("seq", Integer, nullable=False),  # 1.. within the turn; 0: the turn's total
    Column("trace_id", Text),  # the trace that last recorded it
    Column("at", Float, nullable=False),  # when the request started (epoch)
    Column("model", Text),
    Column("input", Integer, nullable=False, server_default=text("0")),  # incl. cached
    Column("cached", Integer, nullable=False, server_default=text("0")),
    Column("cache_write", Integer, nullable=False, server_default=text("0")),
    Column("output", Integer, nullable=False, server_default=text("0")),  # incl. reasoning
    Column("reasoning", Integer, nullable=False, server_default=text("0")),
    Column("total", Integer, nullable=False, server_default=text("0")),
    Column("cost_usd", Float),  # NULL: no price for the model
    Column("project", Text),
    UniqueConstraint("session_id", "turn_id", "seq", name="uq_model_requests_key"),
    sqlite_autoincrement=True,
)
Index("ix_model_requests_at", model_requests.c.at)

# The same requests summed per UTC hour, session, model and project, kept in
# step with model_requests by spool/usage.py: `spool usage` reads this, so its
# time grows with the hours/sessions it reports, not with the requests stored.
usage_hours = Table(
    "usage_hours",
    metadata,
    Column("hour", Integer, nullable=False),  # floor(at / 3600)
    Column("session_id", Text, nullable=False),
    Column("model", Text, nullable=False),  # '' when unknown
    Column("project", Text, nullable=False),  # '' when unknown
    Column("requests", Integer, nullable=False, server_default=text("0")),
    Column("input", Integer, nullable=False, server_default=text("0")),
    Column("cached", Integer, nullable=False, server_default=text("0")),
    Column("cache_write", Integer, nullable=False, server_default=text("0")),
    Column("output", Integer, nullable=False, server_default=text("0")),
    Column("reasoning", Integer, nullable=False, server_default=text("0")),
    Column("total", Integer, nullable=False, server_default=text("0")),
    Column("cost_usd", Float, nullable=False, server_default=text("0")),  # priced ones
    Column("unpriced", Integer, nullable=False, server_default=text("0")),
    UniqueConstraint("hour", "session_id", "model", "project", name="uq_usage_hours_key"),
)
Index("ix_usage_hours_session", usage_hours.c.session_id)

# usage_hours summed again per local day (in the zone kv['usage_days:zone'] names),
# model and project, by spool/usage.py in the same statements' transaction: `spool
# usage` by day, month or model reads a row per day instead of every session-hour.
usage_days = Table(
    "usage_days",
    metadata,
    Column("day", Text, nullable=False),  # YYYY-MM-DD, local
    Column("model", Text, nullable=False),  # '' when unknown
    Column("project", Text, nullable=False),  # '' when unknown
    Column("requests", Integer, nullable=False, server_default=text("0")),
    Column("input", Integer, nullable=False, server_default=text("0")),
    Column("cached", Integer, nullable=False, server_default=text("0")),
    Column("cache_write", Integer, nullable=False, server_default=text("0")),
    Column("output", Integer, nullable=False, server_default=text("0")),
    Column("reasoning", Integer, nullable=False, server_default=text("0")),
    Column("total", Integer, nullable=False, server_default=text("0")),
    Column("cost_usd", Float, nullable=False, server_default=text("0")),  # priced ones
    Column("unpriced", Integer, nullable=False, server_default=text("0")),
    UniqueConstraint("day", "model", "project", name="uq_usage_days_key"),
)


# --- state -------------------------------------------------------------------

# A paused project records nothing: the hook's INSERT is conditional on it.
pauses = Table(
    "pauses",
    metadata,
    Column("project", Text, primary_key=True),
    Column("paused_at", Float, nullable=False),
)

# Sessions retention deleted (spool.maintenance): their rollouts stay on disk, and
# ``spool import`` skips what was delivered already (turns up to last_event_at).
retired_sessions = Table(
    "retired_sessions",
    metadata,
    Column("session_id", Text, primary_key=True),
    Column("last_event_at", Float, nullable=False),
    Column("retired_at", Float, nullable=False),
)

# Paused sinks hold their rows instead of sending.
sink_state = Table(
    "sink_state",
    metadata,
    Column("sink", Text, primary_key=True),
    Column("paused", Integer, nullable=False, server_default=text("0")),
    Column("held_reason", Text),
    Column("updated_at", Float),
)

cursors = Table(
    "cursors",
    metadata,
    Column("name", Text, primary_key=True),
    Column("value", Integer, nullable=False),
    Column("updated_at", Float),
)

# Errors of the worker, ingest and config, for `spool errors`.
errors = Table(
    "errors",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", Float, nullable=False),
    Column("source", Text, nullable=False),  # worker|ingest|config|keyring|job:<name>
    Column("message", Text, nullable=False),
    sqlite_autoincrement=True,
)
Index("ix_errors_at", errors.c.at)

kv = Table(
    "kv",
    metadata,
    Column("key", Text, primary_key=True),
    Column("value", Text),
)

# The exact statement the hook runs (stdlib sqlite3, no SQLAlchemy).  Kept here
# too so tests can prove it matches the tables above.
HOOK_INSERT_COLUMNS = ("received_at", "source", "cwd", "payload", "size", "truncated")
