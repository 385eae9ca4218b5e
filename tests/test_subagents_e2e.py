"""Subagents end to end (issue 18) with the REAL Codex CLI: the fake model scripts a
multi-agent v1 subagent (tests/support/fake_model.py: the parent calls ``spawn_agent``,
the child - its requests carry ``x-openai-subagent`` - runs a command and answers, the
parent calls ``wait_agent``, runs its own command, answers).  spool's hooks capture it,
the autostarted worker traces it and delivers to the OTLP sink (a REAL Arize Phoenix, the
session-scoped ``phoenix`` fixture) and the ATIF sink (checked by Harbor's validator).

Ground truth: what the fake model served (every response has distinct usage, each
request marked parent or child by the header) and the hook payloads spool stored
(PostModelRequest usage; a child's payloads carry ``agent_id``).  Not inside
``unshare -n``: the worker must reach Phoenix on the host's loopback (all traffic stays
on 127.0.0.1).
"""
from __future__ import annotations

import json
import uuid
from collections import Counter

import pytest
from sqlalchemy import text

from spool import db

from support.atif import harbor_validate
from support.codex import codex_binary, make_codex_home, make_codex_project, run_session
from support.e2e import spool_init
from support.fake_model import Final, SpawnAgent, ToolCall, WaitAgent

pytestmark = pytest.mark.e2e

PROMPT = "Have a helper agent run echo child-e2e, then run echo parent-e2e yourself"
CHILD_CMD, PARENT_CMD = "echo child-e2e", "echo parent-e2e"
PARENT_FINAL = "Parent done: the helper printed child-e2e and I printed parent-e2e."
CHILD_FINAL = "Child done: it printed child-e2e."
SCRIPT = [[[SpawnAgent("CHILDTASK: run echo child-e2e and report back")], [WaitAgent()],
           [ToolCall(PARENT_CMD)], [Final(PARENT_FINAL)]]]
CHILD_SCRIPT = [[ToolCall(CHILD_CMD)], [Final(CHILD_FINAL)]]
# multi-agent v2 would encrypt the delegated message; v1 is what the fake model speaks
MULTI_AGENT_V1 = "\n[features.multi_agent_v2]\nenabled = false\n"


def usage_sum(usages) -> dict:
    """Spool's usage keys summed over OpenAI usage objects (served responses)."""
    out = Counter()
    for u in usages:
        out["input"] += u["input_tokens"]
        out["cached"] += u["input_tokens_details"]["cached_tokens"]
        out["output"] += u["output_tokens"]
        out["reasoning"] += u["output_tokens_details"]["reasoning_tokens"]
        out["total"] += u["total_tokens"]
        out["requests"] += 1
    return dict(out)


def hook_usage_sum(payloads) -> dict:
    """The same sums over PostModelRequest hook payloads (Codex's token_usage)."""
    keys = (("input", "input_tokens"), ("cached", "cached_input_tokens"),
            ("output", "output_tokens"), ("reasoning", "reasoning_output_tokens"),
            ("total", "total_tokens"))
    out = Counter()
    for p in payloads:
        for ours, theirs in keys:
            out[ours] += p["token_usage"][theirs]
        out["requests"] += 1
    return dict(out)


def usage_of(body: dict) -> dict:
    return {k: body["usage"][k] for k in ("input", "cached", "output", "reasoning", "total",
                                          "requests")}


def commands(body: dict) -> list[str]:
    return [s["command"] for s in body["steps"] if s.get("tool_name") == "Bash"]


def descendants(spans: list[dict], root: dict) -> list[dict]:
    kids: dict = {}
    for s in spans:
        kids.setdefault(s["parent_id"], []).append(s)
    out, todo = [], [root["context"]["span_id"]]
    while todo:
        for s in kids.get(todo.pop(), []):
            out.append(s)
            todo.append(s["context"]["span_id"])
    return out


def test_real_codex_subagent_is_a_linked_child_in_every_sink(tmp_path, phoenix, spool_home):
    binary = codex_binary()
    home = make_codex_home(tmp_path)
    proj = make_codex_project(tmp_path)
    project_name = f"spool-sub-{uuid.uuid4().hex[:8]}"  # one Phoenix project per run
    spool_init(proj, home, "http://127.0.0.1:9", str(uuid.uuid4()), "unused-secret")
    with open(home / "config.toml", "a") as f:
        f.write(MULTI_AGENT_V1)
    env = {"SPOOL_NO_AUTOSTART": "0", "SPOOL_SESSION_END_GRACE": "3",
           "SPOOL_WORKER_IDLE_EXIT": "1", "SPOOL_SINKS": "otlp,atif",
           "OTEL_EXPORTER_OTLP_ENDPOINT": phoenix.url, "OTEL_SERVICE_NAME": project_name}
    res = run_session(proj, home, [PROMPT], script=SCRIPT, child_script=CHILD_SCRIPT, env=env,
                      codex_bin=binary, isolate=False, wait_worker=90).check()
    assert not res.worker_timed_out, "the autostarted worker did not finish in time"

    # --- what the model served: 4 parent requests, 2 child ones, as scripted ---------------
    parent_served = [s for s in res.served if not s["subagent"]]
    child_served = [s for s in res.served if s["subagent"]]
    assert [s["tools"] for s in parent_served] == [
        ["spawn_agent"], ["wait_agent"], ["exec_command"], []], res.served
    assert [s["commands"] for s in child_served] == [[CHILD_CMD], []], res.served
    assert {s["subagent"] for s in child_served} == {"collab_spawn"}
    assert all(s["kind"] in ("tool_calls", "final") for s in res.served), res.served
    assert len({s["usage"]["input_tokens"] for s in res.served}) == len(res.served)
    spawn_out = next(json.loads(i["output"]) for r in res.requests for i in r["input"]
                     if i.get("type") == "function_call_output"
                     and i["call_id"] == parent_served[0]["call_ids"][0])
    agent_id = spawn_out["agent_id"]
    waits = [json.loads(i["arguments"]) for r in res.requests for i in r["input"]
             if i.get("type") == "function_call" and i.get("name") == "wait_agent"]
    assert waits and waits[0]["targets"] == [agent_id]
    parent_truth, child_truth = usage_sum(s["usage"] for s in parent_served), \
        usage_sum(s["usage"] for s in child_served)

    # --- what the hooks stored ----------------------------------------------------------------
    engine = db.open_db()
    try:
        with db.read(engine) as conn:
            rows = conn.execute(text("SELECT event, session_id, turn_id, payload FROM raw_events"
                                     " WHERE status = 'ok'")).all()
            bodies = [json.loads(r.body) for r in conn.execute(text("SELECT body FROM traces"))]
            outbox = conn.execute(text("SELECT sink, state FROM outbox")).all()
    finally:
        engine.dispose()
    sid = rows[0].session_id
    assert {r.session_id for r in rows} == {sid}  # the child's events carry the parent's id
    payloads = [(r.event, r.turn_id, json.loads(r.payload)) for r in rows]
    events = Counter(e for e, _, _ in payloads)
    assert events["SubagentStart"] == events["SubagentStop"] == 1, events
    assert events["SessionStart"] == events["Stop"] == events["SessionEnd"] == 1, events
    posts = [p for e, _, p in payloads if e == "PostModelRequest"]
    parent_posts = [p for p in posts if not p.get("agent_id")]
    child_posts = [p for p in posts if p.get("agent_id")]
    assert {p["agent_id"] for p in child_posts} <= {agent_id}
    # Post hooks run async (a last one may be lost at exit): each that arrived is a response
    # the model served to that side, by its distinct input count.
    assert {p["token_usage"]["input_tokens"] for p in parent_posts} <= \
        {s["usage"]["input_tokens"] for s in parent_served}
    assert {p["token_usage"]["input_tokens"] for p in child_posts} <= \
        {s["usage"]["input_tokens"] for s in child_served}
    if len(parent_posts) == len(parent_served):
        assert hook_usage_sum(parent_posts) == parent_truth
    if len(child_posts) == len(child_served):
        assert hook_usage_sum(child_posts) == child_truth
    print(f"subagent e2e: codex {res.runs[0].seconds:.1f} s, worker done "
          f"{res.worker_wait_seconds:.1f} s later; hook posts parent {len(parent_posts)}/"
          f"{len(parent_served)}, child {len(child_posts)}/{len(child_served)}")

    # --- the traces ---------------------------------------------------------------------------
    turns = [b for b in bodies if b["kind"] == "turn"]
    parents = [b for b in turns if not b.get("agent")]
    children = [b for b in turns if b.get("agent")]
    assert len(parents) == len(children) == 1, [(b["kind"], b.get("agent")) for b in bodies]
    parent, child = parents[0], children[0]
    assert not parent["incomplete"] and not child["incomplete"], (parent["notes"], child["notes"])
    # the parent turn: only its own command and its own requests' tokens
    assert commands(parent) == [PARENT_CMD]
    assert usage_of(parent) == parent_truth
    assert parent["output_summary"] == PARENT_FINAL
    assert next(s for s in parent["steps"] if s.get("tool_name") == "Bash")["exit_code"] == 0
    # the child: its command and tokens, linked to the parent turn and its spawn step
    assert commands(child) == [CHILD_CMD]
    assert next(s for s in child["steps"] if s.get("tool_name") == "Bash")["exit_code"] == 0
    assert usage_of(child) == child_truth
    assert child["output_summary"] == CHILD_FINAL
    a = child["agent"]
    assert (a["agent_id"], a["agent_type"], a["nickname"], a["depth"]) == (
        agent_id, "default", spawn_out["nickname"], 1)
    assert (a["parent_session_id"], a["parent_turn_id"], a["parent_trace_id"]) == (
        sid, parent["turn_id"], parent["trace_id"])
    spawn_step = parent["steps"][a["spawn_step"] - 1]
    assert spawn_step["tool_name"] == "spawn_agent"
    assert spawn_step["tool_use_id"] == a["spawn_tool_use_id"] == parent_served[0]["call_ids"][0]
    assert [(x["agent_id"], x["turn_id"], x["trace_id"]) for x in parent["subagents"]] == [
        (agent_id, child["turn_id"], child["trace_id"])]
    # no token counted twice: parent + child = every request the model served
    everything = usage_sum(s["usage"] for s in res.served)
    assert {k: parent_truth[k] + child_truth[k] for k in everything} == everything
    summary = max((b for b in bodies if b["kind"] == "session"), key=lambda b: b["revision"])
    assert usage_of(summary) == everything
    # the summary speaks for the user: their prompt, the parent's answer (not the child's)
    assert (summary["input_summary"], summary["output_summary"]) == (PROMPT, PARENT_FINAL)
    # the summary nests the child's steps right after the spawn step: its command first
    assert commands(summary) == [CHILD_CMD, PARENT_CMD]
    assert outbox and set(outbox) == {("otlp", "sent"), ("atif", "sent")}, outbox

    # --- OTLP, as Phoenix stored it: the child under the parent's spawn span, one trace ---
    def ready(spans):
        names = [s["name"] for s in spans]
        return "invoke_agent codex" in names and "invoke_agent default" in names and \
            sum(1 for s in spans if s["span_kind"] == "LLM") >= len(res.served)

    spans = phoenix.wait_spans(project_name, ready, 120)
    assert len({s["context"]["trace_id"] for s in spans}) == 1, "parent and child in two traces"
    assert spans[0]["context"]["trace_id"] == parent["trace_id"].replace("-", "")
    by_id = {s["context"]["span_id"]: s for s in spans}
    roots = [s for s in spans if s["parent_id"] is None]
    assert [r["name"] for r in roots] == ["invoke_agent codex"]
    sub_root = next(s for s in spans if s["name"] == "invoke_agent default")
    spawn_span = by_id[sub_root["parent_id"]]
    assert spawn_span["name"] == "execute_tool spawn_agent"
    assert spawn_span["parent_id"] == roots[0]["context"]["span_id"]
    assert spawn_span["attributes"]["gen_ai.tool.call.id"] == a["spawn_tool_use_id"]
    child_spans = descendants(spans, sub_root)
    parent_spans = [s for s in descendants(spans, roots[0])
                    if s is not sub_root and s not in child_spans]
    assert len(parent_spans) + len(child_spans) + 2 == len(spans)  # nothing stray

    def llm_in(ss):
        return sum(s["attributes"]["llm.token_count.prompt"] for s in ss
                   if s["span_kind"] == "LLM")

    assert llm_in(parent_spans) == parent_truth["input"]
    assert llm_in(child_spans) == child_truth["input"]
    tool_cmds = lambda ss: [s["attributes"].get("process.command_line")  # noqa: E731
                            for s in ss if s["span_kind"] == "TOOL"
                            and s["attributes"].get("process.command_line")]
    assert tool_cmds(child_spans) == [CHILD_CMD]
    assert PARENT_CMD in tool_cmds(parent_spans) and CHILD_CMD not in tool_cmds(parent_spans)

    # --- ATIF: the sink's file validates; the child is an embedded trajectory --------------
    sunk = spool_home / "atif" / f"{sid}.json"
    v = harbor_validate(sunk)
    assert v.returncode == 0, v.stdout + v.stderr
    doc = json.loads(sunk.read_text())
    subs = doc["subagent_trajectories"]
    assert [s["trajectory_id"] for s in subs] == [agent_id]
    sub = subs[0]
    assert sub["extra"]["spool"]["parent_turn_id"] == parent["turn_id"]
    cmds_of = lambda steps: [tc["extra"].get("command") for st in steps  # noqa: E731
                             for tc in st.get("tool_calls", [])]
    assert CHILD_CMD in cmds_of(sub["steps"]) and CHILD_CMD not in cmds_of(doc["steps"])
    assert PARENT_CMD in cmds_of(doc["steps"])
    # the child's conversation is read from its own rollout
    sub_agent = [st for st in sub["steps"] if st["source"] == "agent"]
    assert [(tc["function_name"], tc["arguments"]) for st in sub_agent
            for tc in st.get("tool_calls", [])] == [("exec_command", {"cmd": CHILD_CMD})]
    assert sub_agent[-1]["message"] == CHILD_FINAL
    refs = [r["subagent_trajectory_ref"] for st in doc["steps"]
            for r in (st.get("observation") or {}).get("results", [])
            if "subagent_trajectory_ref" in r]
    assert [x["trajectory_id"] for ref in refs for x in ref] == [agent_id]
    assert sub["final_metrics"]["total_prompt_tokens"] == child_truth["input"]
    assert sub["final_metrics"]["total_completion_tokens"] == child_truth["output"]
    fm = doc["final_metrics"]
    assert fm["total_prompt_tokens"] == everything["input"]
    assert fm["total_completion_tokens"] == everything["output"]
    assert fm["extra"]["model_requests"] == everything["requests"]
