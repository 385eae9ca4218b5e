"""Async mid-turn hooks (issue 20): a turn whose Pre/PostModelRequest or
Pre/PostToolUse events never arrived (Codex killed the async hook at exit) is
completed from its rollout, so its trace keeps the rollout's tokens per request
and exit codes.  Real recorded Codex 0.169.0 payloads and rollout
(tests/fixtures/codex-0.169.0/two-turn-echo)."""
from __future__ import annotations

import hashlib
import json

import pytest

from support.recorded import SESSION_DIR, fixture_rollout
from spool import codex, codex_run
from spool.rollout import RolloutState, read_incremental
from spool.trace import Event, Limits, SessionFacts
from spool.trace_build import build_part, build_turn_trace

S = SessionFacts("01a20038-88d1-76a3-89e0-645a8f69229c", cwd="/p", project="/p")


def fixture_events() -> list[Event]:
    out = []
    for i, f in enumerate(sorted((SESSION_DIR / "payloads").glob("*.json")), 1):
        p = json.loads(f.read_text())
        # arrival times inside the recorded run's window (rollout times ~1795300035)
        out.append(Event(i, 1795300034.0 + i * 0.1, p["hook_event_name"], p.get("turn_id"), p))
    return out


def turns(events: list[Event]) -> dict[str, list[Event]]:
    by: dict[str, list[Event]] = {}
    for e in events:
        if e.turn_id and e.event not in ("SessionStart", "SessionEnd"):
            by.setdefault(e.turn_id, []).append(e)
    return by


def rollout_requests() -> dict[str, list[dict]]:
    """The ground truth, read independently: token_usage_record lines per turn."""
    out: dict[str, list[dict]] = {}
    for line in fixture_rollout().read_text().splitlines():
        obj = json.loads(line)
        if obj.get("type") == "token_usage_record":
            out.setdefault(obj["payload"]["turn_id"], []).append(obj["payload"]["usage"])
    return out


def rollout_exit_codes() -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for line in fixture_rollout().read_text().splitlines():
        p = json.loads(line).get("payload") or {}
        if p.get("type") == "item_completed" and p["item"].get("type") == "CommandExecution":
            out.setdefault(p["turn_id"], {})[p["item"]["id"]] = p["item"]["exit_code"]
    return out


def facts_of(part) -> dict:
    """What the trace promises: tokens per request, exit codes, totals."""
    body = build_turn_trace(S, part).to_dict()
    steps = body["steps"]
    return {
        "requests": [(s["usage"]["input"], s["usage"]["cached"], s["usage"]["output"],
                      s["usage"]["reasoning"], s["usage"]["total"])
                     for s in steps if s["action"] == "model_request"],
        "exit_codes": {s["tool_use_id"]: s["exit_code"] for s in steps if s["action"] == "tool_use"},
        "commands": [s.get("command") for s in steps if s["action"] == "tool_use"],
        "usage": body["usage"],
        "actions": [s["action"] for s in steps],
        "statuses": [s.get("status") for s in steps],
        "incomplete": body["incomplete"],
    }


def truth(turn_id: str) -> dict:
    reqs = rollout_requests()[turn_id]
    return {"requests": [(u["input_tokens"], u["cached_input_tokens"], u["output_tokens"],
                          u["reasoning_output_tokens"], u["total_tokens"]) for u in reqs],
            "exit_codes": rollout_exit_codes()[turn_id]}


DROPS = {
    "all async events": lambda evs: [e for e in evs if e.event not in codex.ASYNC_EVENTS],
    "the last two (killed at exit)": lambda evs: [e for e in evs if e.event != "Stop"][:-2]
    + [e for e in evs if e.event == "Stop"],
    "only PostModelRequest": lambda evs: [e for e in evs if e.event != "PostModelRequest"],
    "only PostToolUse": lambda evs: [e for e in evs if e.event != "PostToolUse"],
    "only PreToolUse": lambda evs: [e for e in evs if e.event != "PreToolUse"],
}


def _posts_first(evs: list[Event]) -> list[Event]:
    """Each Post before its Pre (async hooks finish in any order)."""
    out = list(evs)
    for i in range(len(out) - 1):
        a, b = out[i].event, out[i + 1].event
        if a.startswith("Pre") and b == "Post" + a[3:]:
            out[i], out[i + 1] = out[i + 1], out[i]
    return out


def _arrived(evs: list[Event]) -> list[Event]:
    """Ids and arrival times in list order (as ingest would number them)."""
    base = evs[0].id
    return [Event(base + k, 1795300034.0 + (base + k) * 0.1, e.event, e.turn_id, e.payload)
            for k, e in enumerate(evs)]


DROPS["every Post before its Pre"] = lambda evs: _arrived(_posts_first(evs))
DROPS["Posts first, the last one lost"] = lambda evs: _arrived(
    [e for e in _posts_first(evs) if e.event != "Stop"][:-1] + [e for e in evs if e.event == "Stop"])


@pytest.mark.parametrize("drop", list(DROPS))
def test_a_turn_missing_async_events_keeps_the_rollouts_tokens_and_exit_codes(drop):
    facts = read_incremental(fixture_rollout()).facts()
    for turn_id, evs in turns(fixture_events()).items():
        full = facts_of(build_part(turn_id, evs, Limits(), facts))
        kept = DROPS[drop](evs)
        assert len(kept) < len(evs) or [e.event for e in kept] != [e.event for e in evs]
        lost = facts_of(build_part(turn_id, kept, Limits(), facts))
        want = truth(turn_id)
        assert full["requests"] == want["requests"] and full["exit_codes"] == want["exit_codes"]
        assert lost["requests"] == want["requests"], drop
        assert lost["exit_codes"] == want["exit_codes"], drop
        assert lost["usage"] == full["usage"]
        assert lost["actions"] == full["actions"], drop  # same steps, same order
        assert lost["statuses"] == full["statuses"], drop
        assert lost["commands"] == full["commands"]
        assert not lost["incomplete"]


def test_filled_steps_are_noted_and_a_turn_with_every_event_is_untouched():
    facts = read_incremental(fixture_rollout()).facts()
    turn_id, evs = next(iter(turns(fixture_events()).items()))
    full = build_turn_trace(S, build_part(turn_id, evs, Limits(), facts)).to_dict()
    assert not any("from the rollout" in n for n in full["notes"]), full["notes"]
    lost = build_turn_trace(S, build_part(turn_id, DROPS["all async events"](evs), Limits(),
                                          facts)).to_dict()
    assert any("2 model request(s) and 1 tool call(s) completed from the rollout" in n
               for n in lost["notes"]), lost["notes"]
    assert lost["usage_source"] == "rollout" and full["usage_source"] == "hooks"


def test_out_of_order_async_events_make_no_double_steps_even_without_a_rollout():
    turn_id, evs = next(iter(turns(fixture_events()).items()))
    full = build_part(turn_id, evs, Limits())
    part = build_part(turn_id, DROPS["every Post before its Pre"](evs), Limits())
    assert [s.action for s in part.steps] == [s.action for s in full.steps]
    assert [s.usage for s in part.steps] == [s.usage for s in full.steps]
    assert [s.status for s in part.steps] == [s.status for s in full.steps] == [
        None, "completed", "completed", "completed"]
    assert part.notes == full.notes == []


def test_a_rollout_lagging_behind_the_hooks_takes_nothing_away():
    """Traced at Stop while the rollout's last token_usage_record is not written yet."""
    from dataclasses import replace

    facts = read_incremental(fixture_rollout()).facts()
    turn_id, evs = next(iter(turns(fixture_events()).items()))
    full = facts_of(build_part(turn_id, evs, Limits(), facts))
    lagging = replace(facts, turn_requests={turn_id: facts.turn_requests[turn_id][:1]})
    part = facts_of(build_part(turn_id, evs, Limits(), lagging))
    assert part["requests"] == full["requests"] and part["usage"] == full["usage"]


def test_without_rollout_facts_nothing_is_invented():
    turn_id, evs = next(iter(turns(fixture_events()).items()))
    part = build_part(turn_id, DROPS["all async events"](evs), Limits())
    assert [s.action for s in part.steps] == ["user_prompt"]
    assert part.usage_source == "none"


def test_rollout_state_keeps_requests_per_turn_across_reads():
    whole = read_incremental(fixture_rollout())
    data = fixture_rollout().read_bytes()
    half = data[: len(data) // 2]
    cut = half.rfind(b"\n") + 1
    # half the file, the state saved as the kv row, then the rest
    st = RolloutState.from_json(read_incremental(fixture_rollout(), None,
                                                 max_bytes=cut).to_json())
    assert 0 < sum(map(len, st.requests.values())) < sum(map(len, whole.requests.values()))
    st = read_incremental(fixture_rollout(), st)
    assert st.requests == whole.requests
    want = rollout_requests()
    assert {t: [r["total"] for r in rs] for t, rs in whole.requests.items()} == \
        {t: [u["total_tokens"] for u in us] for t, us in want.items()}
    assert all(isinstance(r["at"], float) for rs in whole.requests.values() for r in rs)
    cmds = whole.facts().commands
    assert all(c.turn_id and c.ended_at and c.started_at for c in cmds.values())


# --- the hook set ------------------------------------------------------------------------


def test_mid_turn_events_are_async_and_lifecycle_events_synchronous():
    groups = codex_run.run_hooks("python3 -I -S /x/spool/hook.py")
    for event, g in groups.items():
        assert g["hooks"][0].get("async", False) is (event in codex.ASYNC_EVENTS), event
    assert codex.ASYNC_EVENTS == {"PreModelRequest", "PostModelRequest", "PreToolUse",
                                  "PostToolUse"}
    sync = codex_run.run_hooks("python3 -I -S /x/spool/hook.py", async_ok=False)
    assert not any(g["hooks"][0].get("async") for g in sync.values())


def test_the_trust_hash_of_an_async_hook_carries_async_true():
    cmd = "python3 -I -S /x/spool/hook.py"
    g = codex.spool_group("PostToolUse", cmd)
    doc = {"event_name": "post_tool_use", "matcher": "*",
           "hooks": [{"type": "command", "command": cmd, "timeout": 30, "async": True}]}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    assert codex_run.hook_hash("PostToolUse", g) == "sha256:" + hashlib.sha256(
        text.encode()).hexdigest()
    assert codex_run.hook_hash("PostToolUse", g) != codex_run.hook_hash(
        "PostToolUse", codex.spool_group("PostToolUse", cmd, async_ok=False))


def test_an_ephemeral_run_keeps_every_hook_synchronous():
    assert codex_run.keeps_rollout(["exec", "hi"])
    assert not codex_run.keeps_rollout(["exec", "--ephemeral", "hi"])
    assert codex_run.keeps_rollout(["exec", "--", "--ephemeral"])
    args = codex_run.overrides("python3 -I -S /x/spool/hook.py", async_ok=False)
    assert "async" not in " ".join(args)
    assert "async = true" in " ".join(codex_run.overrides("python3 -I -S /x/spool/hook.py"))


def test_init_upgrades_an_old_synchronous_install_in_place(tmp_path):
    cmd = "python3 -I -S /x/spool/hook.py"
    old = codex.merge_hooks(None, cmd)
    for event in codex.ASYNC_EVENTS:  # what spool before issue 20 wrote
        old["hooks"][event][0]["hooks"][0].pop("async")
    old["hooks"]["PreToolUse"].insert(0, {"matcher": "Bash", "hooks": [
        {"type": "command", "command": "other-tool"}]})
    assert sorted(codex.outdated_events(old)) == sorted(codex.ASYNC_EVENTS)
    new = codex.merge_hooks(old, cmd)
    assert codex.outdated_events(new) == []
    assert new["hooks"]["PreToolUse"][0] == old["hooks"]["PreToolUse"][0]  # others kept
    assert [len(new["hooks"][e]) for e in codex.EVENTS] == [len(old["hooks"][e]) for e in codex.EVENTS]


def test_doctor_says_an_old_synchronous_install_needs_init_again(tmp_path):
    from typer.testing import CliRunner

    from spool.cli import get_app

    proj = tmp_path / "p"
    (proj / ".codex").mkdir(parents=True)
    doc = codex.merge_hooks(None, codex.hook_command())
    for event in ("PreToolUse", "PostToolUse"):  # as an older spool wrote them
        doc["hooks"][event][0]["hooks"][0].pop("async")
    codex.hooks_path(proj).write_text(json.dumps(doc))

    def hooks_check() -> dict:
        r = CliRunner().invoke(get_app(), ["doctor", "--json", "--project", str(proj),
                                           "--codex-home", str(tmp_path / "ch"),
                                           "--codex-bin", str(tmp_path / "no-codex")])
        return {c["name"]: c for c in json.loads(r.stdout)["checks"]}["hooks installed"]

    c = hooks_check()
    assert c["status"] == "warn" and "PreToolUse, PostToolUse" in c["detail"], c
    assert "spool init" in c["fix"]
    codex.hooks_path(proj).write_text(json.dumps(codex.merge_hooks(doc, codex.hook_command())))
    assert hooks_check()["status"] == "ok"


def test_spool_run_summary_takes_a_traced_turns_tokens_from_its_trace(engine, tmp_path):
    """The last PostModelRequest of an exec is often killed (async): once the turn is
    traced, `spool run`'s line counts the trace's tokens (the rollout's), not the hooks'."""
    import time as _time

    from support.recorded import codex_like_session
    from spool import aggregate, ingest, paths, run_summary

    cwd = str(tmp_path)
    evs = [e for e in codex_like_session("s", 1, cwd=cwd) if e["hook_event_name"] != "PostModelRequest"]
    with engine.begin() as conn:
        for p in evs:
            raw = json.dumps(p).encode()
            conn.exec_driver_sql("INSERT INTO raw_events (received_at, source, cwd, payload, size)"
                                 " VALUES (?,?,?,?,?)", (2000.0, "hook", cwd, raw, len(raw)))
    ingest.ingest_all(engine)

    def line() -> str:
        con = run_summary.connect(paths.db_path())
        try:
            act = run_summary.activity(con, 1500.0, cwd)
        finally:
            con.close()
        return run_summary.summary_line(act, exit_code=0, waited=0.0, timed_out=False)

    assert "0 tokens" in line()  # not traced yet: what the hooks said (nothing)
    assert aggregate.aggregate(engine, _time.time() + 3600).turn_traces == 1
    with engine.begin() as conn:  # the trace's usage (as reconcile would have set it)
        conn.exec_driver_sql("UPDATE traces SET body = json_set(body, '$.usage.input', 1200,"
                             " '$.usage.cached', 200, '$.usage.output', 34, '$.usage.total', 1234)"
                             " WHERE kind = 'turn'")
    assert "1,234 tokens (in 1,200, cached 200, out 34)" in line(), line()
