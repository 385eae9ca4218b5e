"""Maintenance: retention of delivered data, quarantine retention, WAL checkpoint.

The spool must not grow forever, and must never drop anything not delivered.

**The unit of retention is a session.**  A session's raw events, traces,
outbox rows and delivery attempts go together, and only when *all* of this
holds (``retention``):

* the session is ``final`` (nothing left to aggregate: no open turn, no
  pending summary) and its last event is older than the retention age;
* every raw event of the session has been taken into account by the
  aggregator (see ``_AGGREGATED``): an event ingested late (an old overflow
  file found days later) is never deleted before it reached a trace;
* every outbox row of every trace of the session is ``sent``, and was sent
  before the retention age.  A pending, in-flight, failed, held or dead row
  (anything undelivered) keeps the whole session: its trace could be
  re-rendered, and a later summary revision still needs the events.

Each deleted session leaves a ``retired_sessions`` row (its id and the time of its
last event, ~80 bytes): the Codex rollout it came from stays on disk, and ``spool
import`` skips the turns up to that time instead of delivering them again.

The session's ``turns`` rows go too, and so does its ``sessions`` row (with
its rollout facts in ``kv``) - unless the session had a summary trace: then
the row stays as a tombstone (a couple of hundred bytes) carrying the summary
revision, so a session resumed months later gets a *new* summary trace id
(revision + 1) instead of one the receiver already has and would drop as a
duplicate.  (Turn trace ids come from Codex's unique turn ids; only an event
arriving more than the retention age late for an already-deleted turn could
repeat one.)  With the default granularity ``turn`` the database therefore
grows only by the ``retired_sessions`` rows (~80 bytes a session).

Traces without a session (``spool test``) go when all their rows were sent
before the retention age.  Quarantined payloads go after
``SPOOL_QUARANTINE_DAYS``; ``errors`` rows after the retention age.  Every
delete runs in short ``BEGIN IMMEDIATE`` batches, so a hook never waits long
for the write lock.  Then ``PRAGMA wal_checkpoint(TRUNCATE)`` gives the WAL
back; freed pages are reused by SQLite, so the file stops growing.

``spool history`` therefore shows the delivered traces of the retention
period; ``spool history --clear`` forgets them sooner.

==========================  ========================================================
SPOOL_RETENTION_DAYS        age after which delivered data is deleted (30; 0: never)
SPOOL_QUARANTINE_DAYS       age after which quarantined payloads are deleted (30;
                            0: never)
==========================  ========================================================
"""
from __future__ import annotations

import logging
import os
from typing import Mapping

from sqlalchemy import Engine, text

from . import db, outbox, problems, usage
from .aggregate import BUMP_WRITES_SQL
from .errors import SpoolError
from .files import write_atomic

log = logging.getLogger("spool.maintenance")

DAY = 86400.0
DEFAULT_RETENTION_DAYS = 30.0
DEFAULT_QUARANTINE_DAYS = 30.0
BATCH = 200
CHECKPOINT_BUSY_MS = 250
ROLLOUT_KV = "rollout:"  # spool.aggregate.KV_ROLLOUT: per-session rollout facts

# Every 'ok' event of the session has reached the aggregator's bookkeeping: at or
# below the last event id the session recorded (an event above it was not indexed
# yet, so no trace can hold it either).
_AGGREGATED = (
    "NOT EXISTS (SELECT 1 FROM raw_events AS r WHERE r.session_id = s.session_id"
    " AND r.status = 'ok' AND r.id > s.last_event_id)"
)

_CANDIDATES = text(
    "SELECT s.session_id FROM sessions AS s"
    " WHERE s.session_id IN ("
    "   SELECT session_id FROM raw_events WHERE received_at < :cutoff AND session_id IS NOT NULL"
    "   UNION SELECT session_id FROM traces WHERE created_at < :cutoff AND session_id IS NOT NULL)"
    " AND s.state = 'final' AND s.last_event_at < :cutoff"
    f" AND {outbox.SESSION_SENT_BEFORE}"
    f" AND {_AGGREGATED}"
    " LIMIT :batch"
)

# What retention deleted, for ``spool import`` (RETIRED_SQL): the rollout stays on disk,
# and its turns up to the session's last event were delivered already.
_RETIRE = (
    "INSERT INTO retired_sessions (session_id, last_event_at, retired_at)"
    " SELECT session_id, last_event_at, :now FROM sessions WHERE session_id IN {ids}"
    " ON CONFLICT (session_id) DO UPDATE SET retired_at = excluded.retired_at,"
    " last_event_at = max(last_event_at, excluded.last_event_at)"
)
RETIRED_SQL = "SELECT last_event_at FROM retired_sessions WHERE session_id = ?"

_SESSIONLESS = text(
    "SELECT t.trace_id FROM traces AS t WHERE t.created_at < :cutoff AND t.session_id IS NULL"
    f" AND {outbox.TRACE_SENT_BEFORE}"
    " LIMIT :batch"
)


def _days(env: Mapping[str, str], name: str, default: float) -> float:
    """Days, 0 meaning keep forever."""
    from .config import env_number

    return env_number(env, name, default, unit="days")


def retention_seconds(env: Mapping[str, str] | None = None) -> float | None:
    """SPOOL_RETENTION_DAYS in seconds; None: keep forever."""
    d = _days(os.environ if env is None else env, "SPOOL_RETENTION_DAYS", DEFAULT_RETENTION_DAYS)
    return d * DAY if d > 0 else None


def quarantine_seconds(env: Mapping[str, str] | None = None) -> float | None:
    d = _days(os.environ if env is None else env, "SPOOL_QUARANTINE_DAYS",
              DEFAULT_QUARANTINE_DAYS)
    return d * DAY if d > 0 else None


def _in(name: str, values: list) -> tuple[str, dict]:
    keys = {f"{name}{i}": v for i, v in enumerate(values)}
    return "(" + ", ".join(f":{k}" for k in keys) + ")", keys


def _delete_traces(conn, trace_ids: list[str], counts: dict) -> None:
    if trace_ids:
        for key, n in outbox.delete_traces(conn, trace_ids).items():
            counts[key] += n


def retention(engine: Engine, now: float, older_than_s: float, *, batch: int = BATCH) -> dict:
    """Delete delivered sessions' data older than ``older_than_s`` (see the module doc).

    Never touches anything undelivered.  Returns counts:
    {"sessions", "raw_events", "turns", "traces", "outbox", "attempts"}.
    """
    if older_than_s < 0:
        raise SpoolError("--older-than must not be negative.", "Give an age >= 0.")
    cutoff = now - older_than_s
    counts = {"sessions": 0, "raw_events": 0, "turns": 0, "traces": 0, "outbox": 0,
              "attempts": 0}
    while True:
        with db.write(engine) as conn:
            sessions = [r[0] for r in conn.execute(_CANDIDATES,
                                                   {"cutoff": cutoff, "batch": batch})]
            if not sessions:
                break
            ids, params = _in("s", sessions)
            # Sessions that had a summary keep their row as a tombstone (see above).
            summarised = [r[0] for r in conn.execute(text(
                f"SELECT DISTINCT session_id FROM traces WHERE session_id IN {ids}"
                " AND kind = 'session'"), params)]
            trace_ids = [r[0] for r in conn.execute(text(
                f"SELECT trace_id FROM traces WHERE session_id IN {ids}"), params)]
            conn.execute(text(_RETIRE.format(ids=ids)), {**params, "now": now})
            _delete_traces(conn, trace_ids, counts)
            counts["raw_events"] += conn.execute(text(
                f"DELETE FROM raw_events WHERE session_id IN {ids} AND status = 'ok'"),
                params).rowcount
            counts["turns"] += conn.execute(text(
                f"DELETE FROM turns WHERE session_id IN {ids}"), params).rowcount
            usage.forget_sessions(conn, sessions)
            conn.exec_driver_sql(BUMP_WRITES_SQL, (now,))  # index plans made before are stale
            forget = [sid for sid in sessions if sid not in set(summarised)]
            if forget:
                fids, fparams = _in("f", forget)
                fkeys, kparams = _in("k", [ROLLOUT_KV + sid for sid in forget])
                conn.execute(text(f"DELETE FROM kv WHERE key IN {fkeys}"), kparams)
                conn.execute(text(f"DELETE FROM sessions WHERE session_id IN {fids}"), fparams)
            counts["sessions"] += len(sessions)
        if len(sessions) < batch:
            break
    while True:
        with db.write(engine) as conn:
            trace_ids = [r[0] for r in conn.execute(_SESSIONLESS,
                                                    {"cutoff": cutoff, "batch": batch})]
            _delete_traces(conn, trace_ids, counts)
        if len(trace_ids) < batch:
            break
    return counts


def quarantine_retention(engine: Engine, now: float, older_than_s: float,
                         *, batch: int = 1000) -> int:
    """Delete quarantined payloads older than ``older_than_s``.  Returns rows deleted."""
    total = 0
    while True:
        with db.write(engine) as conn:
            n = conn.execute(text(
                "DELETE FROM quarantine WHERE id IN (SELECT id FROM quarantine"
                " WHERE quarantined_at < :cutoff LIMIT :batch)"),
                {"cutoff": now - older_than_s, "batch": batch}).rowcount
        total += n
        if n < batch:
            return total


def errors_retention(engine: Engine, now: float, older_than_s: float) -> int:
    return problems.prune(engine, now - older_than_s)


def checkpoint(engine: Engine) -> tuple[int, int, int]:
    """``PRAGMA wal_checkpoint(TRUNCATE)``: (busy, wal pages, checkpointed pages)."""
    raw = engine.raw_connection()
    try:
        con = raw.driver_connection
        # TRUNCATE waits for readers and holds writers off meanwhile: wait only
        # briefly (hooks give up after SPOOL_HOOK_BUSY_TIMEOUT); busy -> next run.
        con.execute(f"PRAGMA busy_timeout={CHECKPOINT_BUSY_MS}")
        cur = con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        row = cur.fetchone()
        cur.close()
        return tuple(row) if row else (0, 0, 0)
    finally:
        raw.close()


HOOK_LOG_MAX_BYTES = 1_000_000
HOOK_LOG_KEEP_BYTES = 250_000


def trim_hook_logs(dirs) -> int:
    """Keep hook-errors.log files bounded: past HOOK_LOG_MAX_BYTES keep the newest
    HOOK_LOG_KEEP_BYTES (whole lines), rewritten atomically with mode 0600.

    A hook appending during the rewrite can lose that one log line, never an
    event (events never go to this file).  Returns the number of files trimmed.
    """
    import os

    from . import paths

    trimmed = 0
    for d in dirs:
        path = d / paths.HOOK_ERROR_LOG
        try:
            if path.stat().st_size <= HOOK_LOG_MAX_BYTES:
                continue
            with open(path, "rb") as fh:
                fh.seek(-HOOK_LOG_KEEP_BYTES, os.SEEK_END)
                tail = fh.read()
            tail = tail[tail.find(b"\n") + 1:]
            write_atomic(path, tail)
            trimmed += 1
        except OSError:
            continue
    return trimmed


def maintain(engine: Engine, now: float, env: Mapping[str, str] | None = None, *,
             retention_s: float | None = None, quarantine_s: float | None = None,
             log_dirs=()) -> dict:
    """The worker's maintenance job: every retention, then a checkpoint.

    Ages default to SPOOL_RETENTION_DAYS / SPOOL_QUARANTINE_DAYS.  Returns the
    counts, with "quarantine", "errors" and "checkpoint_busy"; only the
    deletions count as work done (the checkpoint always runs).
    """
    retention_s = retention_seconds(env) if retention_s is None else retention_s
    quarantine_s = quarantine_seconds(env) if quarantine_s is None else quarantine_s
    out: dict = {}
    if retention_s is not None:
        out.update(retention(engine, now, retention_s))
        out["errors"] = errors_retention(engine, now, retention_s)
    if quarantine_s is not None:
        out["quarantine"] = quarantine_retention(engine, now, quarantine_s)
    out["hook_logs_trimmed"] = trim_hook_logs(log_dirs)
    out["checkpoint_busy"] = checkpoint(engine)[0]
    return out
