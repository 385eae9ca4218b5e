"""Priced usage for the `spool usage` tests: sessions built by the real pure builders
(``session``), recorded through spool.usage (``write``), and the three-session report
database the report and CLI tests share (``report_db``)."""
from __future__ import annotations

from datetime import datetime, timezone

from spool import cost, usage
from spool.trace import Event, Limits, SessionFacts
from spool.trace_build import build_part, build_session_trace, build_turn_trace

DAY1 = datetime(2026, 11, 2, 12, 0, tzinfo=timezone.utc).timestamp()
DAY2 = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc).timestamp()
ONE = (1000 * 1.25 + 1000 * 0.125 + 100 * 10) / 1e6  # one gpt-5 request below


def events(turn: str, t0: float, models: list[str], first_id: int = 1,
           usage: bool = True) -> list[Event]:
    evs = [Event(first_id, t0, "UserPromptSubmit", turn, {"prompt": "hi"})]
    i = first_id + 1
    for m in models:
        evs.append(Event(i, t0 + i, "PreModelRequest", turn, {"model": m}))
        post = {"model": m, "status": "completed"}
        if usage:
            post["token_usage"] = {"input_tokens": 2000, "cached_input_tokens": 1000,
                                   "output_tokens": 100, "reasoning_output_tokens": 40,
                                   "total_tokens": 2100}
        evs.append(Event(i + 1, t0 + i + 1, "PostModelRequest", turn, post))
        i += 2
    evs.append(Event(i, t0 + i, "Stop", turn, {"last_assistant_message": "ok"}))
    return evs


def session(sid, t0, turns, project="/p/one"):
    """(turn bodies, session summary body) built by the real pure builders, priced."""
    facts = SessionFacts(sid, project=project)
    parts, bodies, first = [], [], 1
    for k, models in enumerate(turns):
        evs = events(f"{sid}-t{k}", t0 + 100 * k, models, first)
        first += len(evs)
        part = build_part(f"{sid}-t{k}", evs, Limits())
        parts.append(part)
        bodies.append(cost.add_cost(build_turn_trace(facts, part).to_dict()))
    summary = cost.add_cost(build_session_trace(facts, parts).to_dict())
    return bodies, summary


def write(engine, bodies):
    raw = engine.raw_connection()
    con = raw.driver_connection
    con.execute("BEGIN IMMEDIATE")
    n = usage.record_traces(con, bodies)
    con.execute("COMMIT")
    raw.close()
    return n


def report_db(engine):
    a, _ = session("s1", DAY1, [["gpt-5"], ["gpt-5"]], project="/p/one")
    b, _ = session("s2", DAY2, [["gpt-5", "gpt-fake"]], project="/p/two")
    c, _ = session("s3", DAY2 + 3600, [["gpt-fake"]], project="/p/two")
    write(engine, a + b + c)
