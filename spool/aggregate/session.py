"""Reading and building one session: its events and rollout -> new traces.

``read_session`` reads a due session's events in one read transaction, reads
its rollout incrementally (offset in ``sessions.rollout_offset``, facts in
``kv['rollout:<session id>']``; outside any transaction) and builds its
traces with the pure builders of spool.trace_build.  The result (``Built``)
carries what it was read from, so the writer (spool.aggregate.write) can
re-check that nothing changed meanwhile.
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import NamedTuple

import orjson

from .. import config as config_mod
from .. import cost, usage
from ..rollout import RolloutState, read_incremental
from ..trace import LIFECYCLE_EVENTS, Event, Limits, RolloutFacts, SessionFacts, trace_id
from ..trace_build import build_session_trace, build_turn_trace
from ..turn_part import TurnPart, build_part
from .connection import in_query, tx
from .links import resolve as resolve_links

KV_ROLLOUT = "rollout:"
# Why a session is finalised -> (an open turn's note, the summary's note).
_END_REASONS = {"ended": ("session ended", "ended"),
                "stale": ("session went stale", "stale (no event for the TTL)"),
                "exited": ("codex exited", "codex exited (its process is gone)")}


@dataclass
class Work:
    """A session due for tracing (spool.aggregate.passes.due)."""

    session_id: str
    cfg: config_mod.Config
    finalize: str | None = None  # None | "ended" | "stale" | "exited" (its Codex is gone)
    events: int = 0  # the session's indexed events (what reading it may cost)


@dataclass
class Built:
    """One session's traces, ready to write, and the facts to re-check first
    (each trace as its ``traces`` row: NewTrace)."""

    session_id: str
    cfg: config_mod.Config
    finalize: str | None
    read_state: str
    read_last_event_id: int
    read_summary_revision: int
    read_rollout_offset: int
    rollout: RolloutState | None
    turn_traces: list[tuple[str, "NewTrace", str | None, bool]] = field(default_factory=list)
    # (turn_id, row, supersedes, needs_finalize)
    summary: "NewTrace | None" = None
    event_count: int = 0


class NewTrace(NamedTuple):
    """A ``traces`` row about to be written, its body serialised (created_at is
    the writer's).  Sinks read stored rows as spool.sinks.base.TraceRow."""

    trace_id: str
    kind: str
    session_id: str
    turn_id: str | None
    revision: int
    supersedes: str | None
    project: str | None
    name: str
    started_at: float | None
    ended_at: float | None
    event_count: int
    body: str  # the body as JSON
    requests: tuple = ()  # its model requests, priced (spool.usage.requests_of)
    # A summary: the turns whose requests it leaves to their own turn traces, built
    # with it (spool.aggregate.write.write_group checks those are written too).
    skipped: frozenset = frozenset()

    @classmethod
    def of(cls, body: dict, traced_turns: frozenset = frozenset()) -> "NewTrace":
        """The row of a built body, priced first (spool.cost.add_cost).  A summary's
        ``traced_turns`` (its turn traces, built with it) add no request rows here:
        they are the turn traces' own (recording each request once is cheaper)."""
        cost.add_cost(body)
        return cls(body["trace_id"], body["kind"], body["session_id"], body["turn_id"],
                   body["revision"], body["supersedes"], body["project"], body["name"],
                   body["started_at"], body["ended_at"], body["event_count"],
                   orjson.dumps(body).decode("utf-8"),
                   tuple(usage.requests_of(body, traced_turns)), traced_turns)

    def all_requests(self) -> tuple:
        """Every model request of the body, the skipped turns' included."""
        if not self.skipped:
            return self.requests
        return tuple(usage.requests_of(orjson.loads(self.body)))


def _child_rollout(events: list[Event]) -> str | None:
    """The path of a subagent turn's own rollout, None for a parent's turn.

    The session's rollout is the parent's; a child's events name the child's
    (SubagentStop names the parent's, ``agent_transcript_path`` the child's)."""
    path = None
    for ev in events:
        p = ev.payload
        if not p.get("agent_id"):
            continue
        cand = p.get("agent_transcript_path") or (
            p.get("transcript_path") if ev.event != "SubagentStop" else None)
        if isinstance(cand, str) and cand:
            path = cand
    return path


def _child_facts(events: list[Event]) -> RolloutFacts | None:
    """A subagent turn's rollout facts (its exit codes), from the child's own rollout,
    read whole when the child's turn is traced (child rollouts are short)."""
    path = _child_rollout(events)
    if path is None:
        return None
    return read_incremental(path, RolloutState()).facts()


def read_session(con: sqlite3.Connection, w: Work) -> Built | None:
    """Read ``w``'s session and build its due traces; None when nothing is due."""
    sid = w.session_id
    with tx(con, immediate=False):
        srow = con.execute(
            "SELECT state, cwd, project, transcript_path, model, permission_mode, source,"
            " last_event_id, summary_revision, rollout_offset, codex_version, git_branch,"
            " git_commit, run_id FROM sessions WHERE session_id = ?", (sid,)).fetchone()
        if srow is None:
            return None
        (state, cwd, project, transcript, model, pmode, source, last_id, summ_rev, r_off,
         cver, gbranch, gcommit, run_id) = srow
        if state == "final":
            return None
        turn_rows = con.execute(
            "SELECT turn_id, seq, state, trace_id, traced_through_id FROM turns"
            " WHERE session_id = ? ORDER BY seq",
            (sid,)).fetchall()
        closed = [t[0] for t in turn_rows if t[2] == "closed"]
        if w.finalize is None and (not closed or not w.cfg.turn_traces):
            return None
        cols = "id, received_at, event, turn_id, payload, late"
        if w.finalize:
            rows = con.execute(f"SELECT {cols} FROM raw_events WHERE session_id = ? AND id <= ?"
                               " AND status = 'ok' ORDER BY id", (sid, last_id)).fetchall()
        else:
            rows = sorted(in_query(
                con, f"SELECT {cols} FROM raw_events WHERE session_id = ? AND id <= ?"
                " AND status = 'ok' AND turn_id IN ({})", closed, (sid, last_id)))
        kv = con.execute("SELECT value FROM kv WHERE key = ?", (KV_ROLLOUT + sid,)).fetchone()
        prev_turn_revs: dict[str, int] = {}
        if w.finalize and w.cfg.granularity == "turn":
            for tid, rev in con.execute(
                    "SELECT trace_id, revision FROM traces WHERE session_id = ? AND kind = 'turn'",
                    (sid,)):
                prev_turn_revs[tid] = rev

    # The rollout: only the bytes written since last time (outside any transaction).
    rstate = RolloutState.from_json(kv[0]) if kv else RolloutState()
    if rstate.offset != r_off:  # facts and offset disagree: start the file again
        rstate = RolloutState()
    new_r = read_incremental(transcript, rstate) if transcript else rstate
    changed = new_r.offset != r_off
    facts = new_r.facts()
    meta_src = new_r.meta.get("source")
    session = SessionFacts(
        session_id=sid, cwd=cwd, project=project, model=model, permission_mode=pmode,
        source=source or meta_src, codex_version=new_r.cli_version or cver,
        git_branch=new_r.git_branch or gbranch, git_commit=new_r.git_commit or gcommit,
        run_id=run_id, redact=w.cfg.redact)
    limits = Limits(w.cfg.max_input_preview, w.cfg.max_output_preview, w.cfg.redact)

    by_turn: dict[str, list[Event]] = {}
    lifecycle: list[Event] = []
    for row in rows:
        ev = Event.from_row(*row)
        if ev.turn_id is None or ev.event in LIFECYCLE_EVENTS:
            lifecycle.append(ev)
        else:
            by_turn.setdefault(ev.turn_id, []).append(ev)
    parts: dict[str, TurnPart] = {tid: build_part(tid, evs, limits, _child_facts(evs) or facts)
                                  for tid, evs in by_turn.items()}
    # Subagents: each child turn links to its parent turn and spawn step, and back.
    agents, children = resolve_links(con, sid, last_id, parts, limits)
    for tid, link in agents.items():  # where an export reads the child's conversation
        path = _child_rollout(parts[tid].events)
        if path:
            link["rollout_path"] = path
    # Each step becomes a dict once, shared by its turn trace and the summary.
    memo: dict[int, dict] = {}

    b = Built(sid, w.cfg, w.finalize, state, last_id, summ_rev, r_off,
              new_r if changed else None, event_count=len(rows))
    trace_of = {t[0]: t[3] for t in turn_rows}
    if w.cfg.turn_traces:
        for tid, _seq, tstate, ttrace, through in turn_rows:
            part = parts.get(tid)
            if part is None:
                continue
            links = {"agent": agents.get(tid), "subagents": children.get(tid)}
            if tstate == "closed":
                row = NewTrace.of(build_turn_trace(session, part, **links).to_dict(memo))
                b.turn_traces.append((tid, row, None, False))
                trace_of[tid] = row.trace_id
            elif tstate == "open" and w.finalize:
                row = NewTrace.of(build_turn_trace(session, part, end_reason=_END_REASONS[
                    w.finalize][0], **links
                ).to_dict(memo))
                b.turn_traces.append((tid, row, None, True))
                trace_of[tid] = row.trace_id
            elif (tstate == "traced" and w.finalize and w.cfg.granularity == "turn"
                  and (through is None or any(e.id > through for e in part.events))):
                # Late events for a traced turn, and no session trace to carry them.
                rev = prev_turn_revs.get(ttrace or "", 0) + 1
                row = NewTrace.of(build_turn_trace(session, part, revision=rev,
                                                   supersedes=ttrace, **links).to_dict(memo))
                b.turn_traces.append((tid, row, ttrace, True))
                trace_of[tid] = row.trace_id
    if w.finalize and w.cfg.session_traces and parts:
        rev = summ_rev + 1
        prev = trace_id(sid, None, "session", summ_rev) if summ_rev else None
        b.summary = NewTrace.of(build_session_trace(
            session, list(parts.values()), lifecycle=lifecycle, revision=rev, supersedes=prev,
            end_reason=_END_REASONS[w.finalize][1],
            turn_trace_ids={k: v for k, v in trace_of.items() if v},
            rollout_total=new_r.total and facts.total_usage, agents=agents).to_dict(memo),
            traced_turns=frozenset(t[0] for t in b.turn_traces))
    return b

