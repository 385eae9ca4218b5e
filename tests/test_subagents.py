"""Subagents (issue 18): the recorded Codex 0.169.0 session in which the parent spawns a
child that runs a command, replayed through the real hook, aggregated, rendered by every sink."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from spool import aggregate, config, db, ingest

from support.hookproc import run_hook
from support.recorded import FIXTURES

DIR = FIXTURES / "codex-0.169.0" / "subagent"
SID = "01a22677-bd26-7d92-8f45-61085437c7fe"
PARENT_TURN = "01a22677-bd46-7d81-afb2-4e9ec9fde456"
CHILD = "01a22677-bfee-74c2-be7a-02ab90cd0750"
CHILD_TURN = "01a22677-c005-7122-8ae8-ad4ac4f2211f"
KEYS = ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_output_tokens",
        "total_tokens")
OURS = ("input", "cached", "output", "reasoning", "total")


def payloads() -> list[tuple[str, dict]]:
    return [(p.stem.split("-", 1)[1], json.loads(p.read_bytes()))
            for p in sorted((DIR / "payloads").glob("*.json"))]


def post_usage(child: bool) -> dict:
    """The PostModelRequest sums of the parent's (or the child's) requests."""
    acc = dict.fromkeys(OURS, 0) | {"requests": 0}
    for name, obj in payloads():
        if name == "PostModelRequest" and bool(obj.get("agent_id")) == child:
            for k, o in zip(KEYS, OURS):
                acc[o] += obj["token_usage"][k]
            acc["requests"] += 1
    return acc


def setup(tmp_path: Path, order=None) -> tuple[Path, dict[str, Path]]:
    project = tmp_path / "project"
    project.mkdir()
    config.write_file(project, {"granularity": "both"})
    rollouts = {}
    for r in (DIR / "rollouts").glob("*.jsonl"):
        dst = tmp_path / r.name
        shutil.copy(r, dst)
        rollouts[r.name] = dst
    return project, rollouts


def rewrite(obj: dict, project: Path, rollouts: dict[str, Path]) -> bytes:
    obj = dict(obj)
    obj["cwd"] = str(project)
    for key in ("transcript_path", "agent_transcript_path"):
        if obj.get(key):
            obj[key] = str(rollouts[Path(obj[key]).name])
    return json.dumps(obj).encode()


def replay(tmp_path: Path, events=None):
    project, rollouts = setup(tmp_path)
    engine = db.open_db()
    for name, obj in (events if events is not None else payloads()):
        r = run_hook(rewrite(obj, project, rollouts), cwd=project)
        assert r.returncode == 0, (name, r)
    ingest.ingest_all(engine)
    return engine


def traces(engine) -> list[dict]:
    with db.read(engine) as conn:
        rows = conn.exec_driver_sql("SELECT body FROM traces ORDER BY created_at").fetchall()
    return [json.loads(r[0]) for r in rows]


def usage_of(body: dict) -> dict:
    return {k: body["usage"][k] for k in (*OURS, "requests")}


@pytest.fixture
def traced(tmp_path):
    engine = replay(tmp_path)
    aggregate.aggregate(engine, time.time() + 60)
    out = {}
    for b in traces(engine):
        key = "session" if b["kind"] == "session" else (
            "child" if b.get("agent") else "parent")
        out[key] = b
    return engine, out


def test_parent_turn_has_only_its_own_work(traced):
    _, t = traced
    parent = t["parent"]
    assert parent["turn_id"] == PARENT_TURN and not parent["incomplete"]
    assert usage_of(parent) == post_usage(child=False)
    commands = [s["command"] for s in parent["steps"] if s.get("tool_name") == "Bash"]
    assert commands == ["echo parent-fixture"]
    # the session's rollout is the parent's: the parent's command has its exit code
    bash = next(s for s in parent["steps"] if s.get("tool_name") == "Bash")
    assert bash["exit_code"] == 0
    assert all(s.get("turn_id") == PARENT_TURN for s in parent["steps"])


def test_child_is_linked_and_has_its_own_work(traced):
    _, t = traced
    parent, child = t["parent"], t["child"]
    assert child["turn_id"] == CHILD_TURN and not child["incomplete"]
    assert usage_of(child) == post_usage(child=True)
    assert [s["command"] for s in child["steps"] if s.get("tool_name") == "Bash"] == [
        "echo child-fixture"]
    a = child["agent"]
    spawn = parent["steps"][a["spawn_step"] - 1]
    assert spawn["tool_name"] == "spawn_agent" and spawn["tool_use_id"] == "call_fake_1"
    assert (a["agent_id"], a["agent_type"], a["nickname"], a["depth"]) == (
        CHILD, "default", "Lagrange", 1)
    assert (a["parent_turn_id"], a["parent_trace_id"], a["spawn_tool_use_id"]) == (
        PARENT_TURN, parent["trace_id"], "call_fake_1")
    assert parent["subagents"] == [{
        "agent_id": CHILD, "agent_type": "default", "nickname": "Lagrange",
        "spawn_tool_use_id": "call_fake_1", "spawn_step": a["spawn_step"],
        "turn_id": CHILD_TURN, "trace_id": child["trace_id"]}]


def test_no_token_counted_twice(traced):
    engine, t = traced

    both = {k: post_usage(False)[k] + post_usage(True)[k] for k in OURS}
    assert {k: t["session"]["usage"][k] for k in OURS} == both
    with db.read(engine) as conn:
        rows = conn.exec_driver_sql(
            "SELECT turn_id, count(*), sum(input), sum(output)"
            " FROM model_requests GROUP BY turn_id ORDER BY turn_id").fetchall()
    assert {r[0]: tuple(r[1:]) for r in rows} == {
        PARENT_TURN: (4, post_usage(False)["input"], post_usage(False)["output"]),
        CHILD_TURN: (2, post_usage(True)["input"], post_usage(True)["output"])}



def test_child_command_has_its_exit_code_from_the_child_rollout(traced):
    _, t = traced
    bash = next(s for s in t["child"]["steps"] if s.get("tool_name") == "Bash")
    assert bash["exit_code"] == 0 and bash["exec_duration_ms"] is not None


def test_forked_child_copied_history_is_not_counted(tmp_path):
    """A forked child's rollout: copied parent token_count lines (ordinal below
    subagent_history_start_ordinal) are not counted in the fallback usage."""
    from spool.rollout import read_incremental

    def tc(ordinal, n):
        usage = {"input_tokens": n, "cached_input_tokens": 0, "output_tokens": 1,
                 "reasoning_output_tokens": 0, "total_tokens": n + 1}
        return {"ordinal": ordinal, "type": "event_msg", "payload": {
            "type": "token_count", "info": {"total_token_usage": dict(usage, input_tokens=n * 7),
                                            "last_token_usage": usage}}}
    lines = [
        {"ordinal": 0, "type": "session_meta", "payload": {"id": "child", "session_id": "p"}},
        {"ordinal": 1, "type": "turn_context", "payload": {"turn_id": "parent-turn"}},
        tc(2, 100),
        {"ordinal": 3, "type": "session_meta", "payload": {
            "id": "child", "subagent_history_start_ordinal": 4}},
        {"ordinal": 4, "type": "turn_context", "payload": {"turn_id": "child-turn"}},
        tc(5, 10),
    ]
    path = tmp_path / "child.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    facts = read_incremental(path).facts()
    assert "parent-turn" not in facts.turn_usage
    assert facts.turn_usage["child-turn"]["input"] == 10


def test_infinium_bodies_name_parent_and_child(traced):
    from spool.render import to_infinium

    _, t = traced
    child_tags = to_infinium(t["child"])["environment"]["custom_tags"]
    parent = to_infinium(t["parent"])
    assert child_tags["parent_trace_id"] == t["parent"]["trace_id"]
    assert child_tags["parent_spawn_tool_use_id"] == "call_fake_1"
    assert child_tags["agent_id"] == CHILD
    assert "subagent" in to_infinium(t["child"])["sections"]["general"]["tags"]
    assert parent["environment"]["custom_tags"]["child_trace_ids"] == t["child"]["trace_id"]
    assert parent["llm_usage"]["prompt_tokens"] == post_usage(child=False)["input"]


def test_otlp_child_span_under_the_parent_spawn_span(traced):
    from spool import otlp

    _, t = traced
    opts = otlp.Options()
    parent = otlp.spans_for(t["parent"], opts)
    child = otlp.spans_for(t["child"], opts)
    assert {s.trace_id for s in parent} == {s.trace_id for s in child}  # one trace
    ids = {s.span_id: s for s in parent + child}
    assert len(ids) == len(parent) + len(child)  # no span id shared
    root = child[0]
    assert root.name == "invoke_agent default"
    spawn = ids[root.parent_span_id]
    assert spawn.name == "execute_tool spawn_agent"
    attrs = {a.key: a.value for a in spawn.attributes}
    assert attrs["gen_ai.tool.call.id"].string_value == "call_fake_1"
    # the child's command and requests hang under the child's root, not the parent's
    child_tools = [s for s in child if s.name.startswith("execute_tool")]
    assert [s.parent_span_id for s in child_tools] == [root.span_id]
    assert not any(s.name.startswith("invoke_agent") for s in child[1:])
    chat_in = lambda spans: sum(  # noqa: E731
        {a.key: a.value for a in s.attributes}["gen_ai.usage.input_tokens"].int_value
        for s in spans if s.name.startswith("chat"))
    assert chat_in(parent) == post_usage(child=False)["input"]
    assert chat_in(child) == post_usage(child=True)["input"]


def test_atif_subagent_trajectory_validates(traced, tmp_path):
    from spool.export import atif_document

    from support.atif import harbor_validate

    engine, t = traced
    doc = atif_document(engine, SID)
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc))
    r = harbor_validate(path)
    assert r.returncode == 0, r.stdout + r.stderr
    subs = doc["subagent_trajectories"]
    assert [s["trajectory_id"] for s in subs] == [CHILD]
    sub = subs[0]
    assert sub["extra"]["spool"]["parent_turn_id"] == PARENT_TURN
    # the child's requests are in its trajectory, not the root's
    root_calls = [tc["function_name"] for st in doc["steps"] for tc in st.get("tool_calls", [])]
    sub_cmds = [tc["extra"].get("command") for st in sub["steps"]
                for tc in st.get("tool_calls", [])]
    assert "echo child-fixture" in sub_cmds
    # the child's conversation comes from its own rollout: Codex's function names, its
    # reasoning and its answer on its agent steps
    sub_agent = [st for st in sub["steps"] if st["source"] == "agent"]
    assert [tc["function_name"] for st in sub_agent for tc in st.get("tool_calls", [])] == [
        "exec_command"]
    assert [tc["arguments"] for st in sub_agent for tc in st.get("tool_calls", [])] == [
        {"cmd": "echo child-fixture"}]
    assert sub_agent[-1]["message"] == "Child done: it printed child-fixture."
    assert sub_agent[0]["reasoning_content"] == "Run the command."
    root_cmds = [tc["extra"].get("command") for st in doc["steps"]
                 for tc in st.get("tool_calls", [])]
    assert root_calls == ["spawn_agent", "wait_agent", "exec_command"]
    assert root_cmds[-1] == "echo parent-fixture"
    assert "echo child-fixture" not in root_cmds
    refs = [r["subagent_trajectory_ref"] for st in doc["steps"]
            for r in (st.get("observation") or {}).get("results", [])
            if "subagent_trajectory_ref" in r]
    assert refs == [[{"trajectory_id": CHILD, "session_id": SID}]]
    p, c = post_usage(child=False), post_usage(child=True)
    assert sub["final_metrics"]["total_prompt_tokens"] == c["input"]
    fm = doc["final_metrics"]
    assert fm["total_prompt_tokens"] == p["input"] + c["input"]
    assert fm["total_completion_tokens"] == p["output"] + c["output"]
    assert fm["extra"]["model_requests"] == p["requests"] + c["requests"]


def test_session_summary_speaks_for_the_user_not_the_subagent(traced):
    """The summary's input is the user's prompt and its output the parent's answer: the
    child's prompt (the spawn message) and its final message stay in the child's turn,
    even though the child's turn is ordered after the parent's."""
    _, t = traced
    s, parent, child = t["session"], t["parent"], t["child"]
    assert s["input_summary"] == parent["input_summary"] == (
        "Have a helper agent run echo child-fixture, then run echo parent-fixture yourself")
    assert s["output_summary"] == parent["output_summary"] == (
        "Parent done: the helper printed child-fixture and I printed parent-fixture.")
    assert child["output_summary"] == "Child done: it printed child-fixture."
    assert child["input_summary"] not in s["input_summary"]


def test_session_summary_nests_the_child_after_its_spawn_step(traced):
    """The summary reads in the order the work happened: the child's steps right after
    the parent's spawn_agent step, each step exactly once."""
    _, t = traced
    s, parent, child = t["session"], t["parent"], t["child"]
    key = lambda st: (st["action"], st.get("turn_id"), st.get("tool_use_id"),  # noqa: E731
                      st.get("started_at"))
    got = [key(st) for st in s["steps"]]
    assert len(got) == len(set(got)) == len(parent["steps"]) + len(child["steps"]) + 2
    spawn = got.index(key(parent["steps"][child["agent"]["spawn_step"] - 1]))
    n = len(child["steps"])
    assert got[spawn + 1:spawn + 1 + n] == [key(st) for st in child["steps"]]
    assert got[spawn + 1 + n] == key(parent["steps"][child["agent"]["spawn_step"]])
    assert [st["number"] for st in s["steps"]] == list(range(1, len(got) + 1))


def test_show_indents_the_child(traced):
    from spool import timeline

    _, t = traced
    text = timeline.render(t["session"], width=200)
    child_line = next(x for x in text.splitlines() if x.endswith("tool_use           echo child-fixture"))
    parent_line = next(x for x in text.splitlines() if "echo parent-fixture" in x)
    indent = lambda x: x.index("tool_use")  # noqa: E731
    assert indent(child_line) == indent(parent_line) + 4
    parent = timeline.render(t["parent"], width=200)
    assert f"↳ subagent Lagrange: trace {t['child']['trace_id']}" in parent
    child = timeline.render(t["child"], width=200)
    assert f"of trace {t['parent']['trace_id']}, spawned at step" in child


def by_key(engine) -> dict:
    out = {}
    for b in traces(engine):
        out[(b["kind"], b["turn_id"])] = b
    return out


def test_child_outliving_its_parent_turn_is_traced_and_linked(tmp_path):
    evs = payloads()
    child = [e for e in evs if e[1].get("agent_id")]
    parent = [e for e in evs if not e[1].get("agent_id") and e[0] != "SessionEnd"]
    end = [e for e in evs if e[0] == "SessionEnd"]
    project, rollouts = setup(tmp_path)
    engine = db.open_db()

    def feed(items):
        for name, obj in items:
            assert run_hook(rewrite(obj, project, rollouts), cwd=project).returncode == 0
        ingest.ingest_all(engine)
    feed(parent)  # the parent's turn ends before the child has done anything
    aggregate.aggregate(engine, time.time())
    first = by_key(engine)
    assert ("turn", PARENT_TURN) in first and ("turn", CHILD_TURN) not in first
    feed(child)
    aggregate.aggregate(engine, time.time())
    t = by_key(engine)
    c = t[("turn", CHILD_TURN)]
    assert not c["incomplete"]
    assert c["agent"]["parent_trace_id"] == first[("turn", PARENT_TURN)]["trace_id"]
    assert c["agent"]["spawn_tool_use_id"] == "call_fake_1"
    assert usage_of(c) == post_usage(child=True)
    # the parent's turn trace was written before the child's turn began: it still links
    # by the child's agent id (its child trace id comes from SubagentStart, missing then)
    assert first[("turn", PARENT_TURN)]["subagents"][0]["agent_id"] == CHILD
    feed(end)
    aggregate.aggregate(engine, time.time() + 60)
    assert usage_of(by_key(engine)[("turn", PARENT_TURN)]) == post_usage(child=False)


def test_child_that_never_stops_is_traced_incomplete_and_linked(tmp_path):
    evs = [e for e in payloads() if e[0] != "SubagentStop"]
    engine = replay(tmp_path, evs)
    aggregate.aggregate(engine, time.time() + 60)
    t = by_key(engine)
    c = t[("turn", CHILD_TURN)]
    assert c["incomplete"] and "no SubagentStop received" in c["notes"][0]
    assert c["agent"]["parent_turn_id"] == PARENT_TURN
    assert usage_of(c) == post_usage(child=True)
    assert usage_of(t[("turn", PARENT_TURN)]) == post_usage(child=False)


def test_grandchild_depth_two(tmp_path):
    g, g_turn = "grandchild-agent", "grandchild-turn"
    base = {"session_id": SID, "cwd": "/x"}
    as_child = dict(base, turn_id=CHILD_TURN, agent_id=CHILD, agent_type="default")
    as_grand = dict(base, turn_id=g_turn, agent_id=g, agent_type="explorer")
    extra = [
        ("PreToolUse", dict(as_child, hook_event_name="PreToolUse", tool_name="spawn_agent",
                            tool_use_id="call_g", tool_input={"message": "look"})),
        ("SubagentStart", dict(as_grand, hook_event_name="SubagentStart")),
        ("PostToolUse", dict(as_child, hook_event_name="PostToolUse", tool_name="spawn_agent",
                             tool_use_id="call_g", tool_input={"message": "look"},
                             tool_response=json.dumps({"agent_id": g, "nickname": "Noether"}))),
        ("UserPromptSubmit", dict(as_grand, hook_event_name="UserPromptSubmit", prompt="look")),
        ("PreModelRequest", dict(as_grand, hook_event_name="PreModelRequest")),
        ("PostModelRequest", dict(as_grand, hook_event_name="PostModelRequest",
                                  status="completed", token_usage={
                                      "input_tokens": 50, "cached_input_tokens": 0,
                                      "output_tokens": 5, "reasoning_output_tokens": 0,
                                      "total_tokens": 55})),
        ("SubagentStop", dict(as_grand, hook_event_name="SubagentStop",
                              last_assistant_message="found it")),
    ]
    evs = payloads()
    at = next(i for i, e in enumerate(evs) if e[0] == "SubagentStop")
    engine = replay(tmp_path, evs[:at] + extra + evs[at:])
    aggregate.aggregate(engine, time.time() + 60)
    t = by_key(engine)
    gc, c = t[("turn", g_turn)], t[("turn", CHILD_TURN)]
    assert (gc["agent"]["depth"], gc["agent"]["parent_agent_id"]) == (2, CHILD)
    assert gc["agent"]["parent_trace_id"] == c["trace_id"]
    assert c["steps"][gc["agent"]["spawn_step"] - 1]["tool_use_id"] == "call_g"
    assert c["subagents"][0]["trace_id"] == gc["trace_id"]
    assert gc["usage"]["input"] == 50 and usage_of(c) == post_usage(child=True)
    assert t[("session", None)]["usage"]["input"] == (
        post_usage(False)["input"] + post_usage(True)["input"] + 50)


def test_atif_total_cost_includes_the_subagents(traced, tmp_path):
    """final_metrics.total_cost_usd = the root's agent steps' cost_usd + the subagent's
    total (Harbor: "including cost for subagents"); the recorded gpt-fake is unpriced."""
    from spool import atif, export
    from spool.cost import add_cost

    from support.atif import harbor_validate

    engine, _ = traced
    with db.read(engine) as conn:
        bodies = export.latest_traces(conn, SID)
    doc = atif.render(atif.Session(SID, bodies))
    assert "total_cost_usd" not in doc["final_metrics"]  # gpt-fake: no price, never 0
    # every request unpriced, the subagent's included (4 parent + 2 child)
    assert doc["final_metrics"]["extra"]["unpriced_model_requests"] == 6
    for b in bodies:  # the same session as if the model were gpt-5
        b["environment"]["model"] = "gpt-5"
        b["steps"] = [dict(s, model="gpt-5") if s.get("action") == "model_request" else s
                      for s in b["steps"]]
        add_cost(b)
    doc = atif.render(atif.Session(SID, bodies))
    own = [st["metrics"]["cost_usd"] for st in doc["steps"] if "cost_usd" in st.get("metrics", {})]
    sub = doc["subagent_trajectories"][0]["final_metrics"]["total_cost_usd"]
    assert own and sub > 0
    assert doc["final_metrics"]["total_cost_usd"] == pytest.approx(sum(own) + sub)
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc))
    assert harbor_validate(path).returncode == 0
