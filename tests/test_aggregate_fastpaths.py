"""The aggregator's fast paths build exactly what the plain code builds."""
from __future__ import annotations

import uuid

import orjson

from spool.trace import TRACE_NAMESPACE, Event, Limits, SessionFacts, trace_id
from spool.trace_build import build_part, build_session_trace, build_turn_trace

S = SessionFacts("sess", cwd="/p", project="/p", source="startup", codex_version="0.1")


def test_trace_id_is_uuid5_of_the_key():
    for sid, tid, kind, rev in [("s", "t", "turn", 0), ("s", None, "session", 3),
                                ("ünï\x1fcode", "synthetic:7", "turn", 12), ("", "", "turn", 1)]:
        key = f"{sid}\x1f{tid or ''}\x1f{kind}" + (f"\x1f{rev}" if rev else "")
        assert trace_id(sid, tid, kind, rev) == str(uuid.uuid5(TRACE_NAMESPACE, key))


def test_iso_says_what_datetime_says():
    """trace.iso formats with time.gmtime (a datetime per trace cost ~4% of a pass): the
    same text as datetime, at the microsecond roundings where a second turns over too."""
    import random
    from datetime import datetime, timezone

    from spool.trace import iso

    rng = random.Random(3)
    stamps = [rng.uniform(1.6e9, 2.1e9) for _ in range(50000)]
    stamps += [1_800_000_001.9999996, 1_800_000_001.9999994, 1_800_000_001.0, 0.0, 59.9999999]
    for ts in stamps:
        assert iso(ts) == datetime.fromtimestamp(ts, tz=timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%SZ"), ts
    assert iso(None) == ""


def _events():
    evs = [Event(1, 100.0, "SessionStart", None, {"source": "startup", "model": "m"})]
    i = 2
    for turn in ("A", "B"):
        for name, extra in [("UserPromptSubmit", {"prompt": f"do {turn}"}),
                            ("PreModelRequest", {"model": "m"}),
                            ("PostModelRequest", {"status": "completed",
                                                  "token_usage": {"input_tokens": 5}}),
                            ("PreToolUse", {"tool_name": "Bash", "tool_use_id": f"c{turn}",
                                            "tool_input": {"command": "ls"}}),
                            ("PostToolUse", {"tool_name": "Bash", "tool_use_id": f"c{turn}",
                                             "tool_input": {"command": "ls"},
                                             "tool_response": "x"}),
                            ("Interrupt", {}),
                            ("Stop", {"last_assistant_message": "ok"})]:
            evs.append(Event(i, 100.0 + i, name, turn, {"hook_event_name": name, **extra}))
            i += 1
    evs.append(Event(i, 100.0 + i, "SessionEnd", None, {"reason": "exit"}))
    return evs


def test_shared_step_dicts_give_the_same_bodies():
    def build(memo):
        evs = _events()
        parts = [build_part(t, [e for e in evs if e.turn_id == t], Limits()) for t in ("A", "B")]
        life = [e for e in evs if e.turn_id is None]
        turns = [build_turn_trace(S, p).to_dict(memo) for p in parts]
        summary = build_session_trace(S, parts, lifecycle=life).to_dict(memo)
        return turns, summary

    plain, shared = build(None), build({})
    assert orjson.dumps(plain) == orjson.dumps(shared)
    turns, summary = shared
    # The summary renumbers the steps it shares with the turn traces, the turn
    # traces keep their own numbers.
    assert [s["number"] for s in summary["steps"]] == list(range(1, len(summary["steps"]) + 1))
    assert [s["number"] for s in turns[1]["steps"]] == list(range(1, len(turns[1]["steps"]) + 1))
    assert summary["steps"][1]["action"] == "user_prompt" and summary["steps"][1]["number"] == 2
    assert summary["errors"] and all(e["type"] == "Interrupted" for e in summary["errors"])
