"""The aggregation pass: index, find what is due, read and write it, serially.

``aggregate`` (every second in the worker) finalises sessions that ended
(SessionEnd + ``session_end_grace`` quiet) and traces closed turns; ``sweep``
finalises sessions quiet for ``session_ttl``.  Finalising a session: open turns
are traced as *incomplete* (granularity turn/both), a session summary is made
(session/both, not for an empty session), and in ``turn`` granularity a turn
that received late events gets a new revision of its trace covering them
(``supersedes`` the first).  In ``both``, late events go into the session
summary.  A session that resumes after its summary gets a new summary revision
covering the whole session.

Cost grows with new work only: the index cursor, the partial indexes on open
sessions (``ix_sessions_open``) and untraced turns (``ix_turns_pending``).
"""
from __future__ import annotations

import sqlite3
import time
import traceback
from typing import Mapping

from sqlalchemy import Engine

from .. import config as config_mod
from ..wal_checkpointer import Checkpointer
from .connection import CHECKPOINT_EVERY_S, connect, log_error, tx
from .index import index
from .result import AggregateResult, Configs
from .session import Built, Work, read_session
from .write import Sizer, flush


# An open session quiet this long whose Codex process is gone is finalised by the
# sweep ("codex exited") instead of waiting for the TTL.
CODEX_GONE_QUIET = 5.0


def finalize_kind(state: str, quiet: float, cfg: config_mod.Config, stale: bool) -> str | None:
    """Whether a session is due to be finalised: by ``sweep`` (``stale``) when
    quiet for the TTL, by ``aggregate`` when ended and quiet for the grace period."""
    if stale:
        return "stale" if quiet >= cfg.session_ttl else None
    return "ended" if state == "ended" and quiet >= cfg.session_end_grace else None


def codex_alive(pid: int, start: int | None) -> bool:
    """Whether the Codex process the hook recorded still runs: the pid exists with the
    same start time (a reused pid has another).  Unknown (no /proc) counts as alive."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    try:
        fields = stat[stat.rindex(b")") + 2:].split()
        if fields[0] in (b"Z", b"X"):  # a zombie: it has exited, its parent has not reaped it
            return False
        return start is None or int(fields[19]) == start
    except (ValueError, IndexError):
        return True


def due(con: sqlite3.Connection, now: float, cfgs: Configs, *, stale: bool) -> list[Work]:
    """The sessions to finalise, and (``aggregate`` only) those with closed turns."""
    with tx(con, immediate=False):
        open_sessions = con.execute(
            "SELECT session_id, state, cwd, last_event_at, event_count, codex_pid, codex_start"
            " FROM sessions WHERE state != 'final'").fetchall()
        closed = {r[0] for r in con.execute(
            "SELECT DISTINCT session_id FROM turns WHERE state != 'traced' AND state = 'closed'")}
    work = []
    for sid, state, cwd, last_at, events, pid, start in open_sessions:
        cfg = cfgs.get(cwd)
        kind = finalize_kind(state, now - last_at, cfg, stale)
        if (kind is None and stale and state == "open" and pid is not None
                and now - last_at >= CODEX_GONE_QUIET and not codex_alive(pid, start)):
            kind = "exited"  # killed or crashed: no Stop/SessionEnd will come
        if kind is not None:
            work.append(Work(sid, cfg, kind, events))
        elif not stale and sid in closed and cfg.turn_traces:
            work.append(Work(sid, cfg, None, events))
    return work


def _trace(con: sqlite3.Connection, work: list[Work], now: float, res: AggregateResult,
           ckpt: Checkpointer) -> None:
    """Read and build each due session, writing them in groups (sized by Sizer)."""
    sizer = Sizer()
    pending: list[Built] = []
    pending_events = 0
    for w in work:
        try:
            built = read_session(con, w)
        except Exception:
            res.errors += 1
            log_error(con, now, f"session {w.session_id}: {traceback.format_exc()}")
            continue
        if built is None:
            continue
        pending.append(built)
        pending_events += built.event_count
        if pending_events >= sizer.group_events:
            flush(con, pending, now, res, sizer, ckpt)
            pending, pending_events = [], 0
    if pending:
        flush(con, pending, now, res, sizer, ckpt)


def _pass(engine: Engine, now: float, env: Mapping[str, str] | None, *,
          stale: bool) -> AggregateResult:
    res = AggregateResult()
    cfgs = Configs(env)
    ckpt = Checkpointer(engine, CHECKPOINT_EVERY_S)
    try:
        with connect(engine) as con:
            index(con, now, cfgs, res, ckpt)
            _trace(con, due(con, now, cfgs, stale=stale), now, res, ckpt)
    finally:
        ckpt.close()
    res.max_checkpoint_ms = max(res.max_checkpoint_ms, ckpt.max_ms)
    return res


def aggregate(engine: Engine, now: float, *, env: Mapping[str, str] | None = None) -> AggregateResult:
    """One pass: index new events, trace closed turns, finalise ended sessions."""
    return _pass(engine, now, env, stale=False)


def sweep(engine: Engine, now: float, *, env: Mapping[str, str] | None = None) -> int:
    """Finalise sessions quiet for ``session_ttl``.  Returns how many were finalised."""
    return _pass(engine, now, env, stale=True).sessions_finalised


def run_pass(engine: Engine, now: float | None = None, *,
             env: Mapping[str, str] | None = None) -> AggregateResult:
    """aggregate() then sweep(), what the worker's job does (convenience)."""
    now = time.time() if now is None else now
    res = aggregate(engine, now, env=env)
    res.sessions_finalised += sweep(engine, now, env=env)
    return res
