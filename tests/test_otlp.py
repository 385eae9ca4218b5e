"""The OTLP mapping (spool/otlp.py): real trace bodies (tests/fixtures/otlp/bodies.json, built by
replaying the recorded Codex 0.169.0 session through hook -> ingest -> aggregate) become the
spans the issue names; ids are deterministic; encodings round-trip; content follows the switch
and is redacted before it is cut."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from spool import otlp, otlp_wire
from spool.sinks import otlp as otlp_sink

BODIES = json.loads((Path(__file__).parent / "fixtures" / "otlp" / "bodies.json").read_text())
TURN = BODIES["turn"][0]
SESSION = BODIES["session"][0]
OPTS = otlp.Options()
# OpenInference names Phoenix synthesizes from the gen_ai.* ones (spool sends only the latter)
DERIVED_BY_PHOENIX = {
    "llm.provider", "llm.system", "llm.model_name", "llm.token_count.prompt",
    "llm.token_count.completion", "llm.token_count.total",
    "llm.token_count.prompt_details.cache_read", "llm.token_count.prompt_details.cache_write",
    "tool.name", "tool.id", "tool.parameters"}


def attrs(span) -> dict:
    return otlp_wire.attributes(span)


def by_name(spans) -> dict:
    out: dict = {}
    for s in spans:
        out.setdefault(s.name, []).append(s)
    return out


def test_turn_maps_to_root_chat_and_tool_spans():
    spans = otlp.spans_for(TURN, OPTS)
    names = by_name(spans)
    assert [s.name for s in spans] == ["invoke_agent codex", "chat gpt-fake",
                                       "execute_tool Bash", "chat gpt-fake"]
    root = spans[0]
    assert root.parent_span_id == b"" and root.kind == Span.SPAN_KIND_INTERNAL
    assert all(s.parent_span_id == root.span_id for s in spans[1:])
    assert len({s.trace_id for s in spans}) == 1 and len({s.span_id for s in spans}) == 4
    ra = attrs(root)
    assert ra["gen_ai.operation.name"] == "invoke_agent"
    assert ra["gen_ai.agent.name"] == "codex" and ra["gen_ai.provider.name"] == "openai"
    assert ra["gen_ai.request.model"] == "gpt-fake"
    # OpenInference copies Phoenix derives from gen_ai.* are not sent (spool/otlp_attrs.py;
    # tests/test_e2e_otlp.py reads the kinds and token counts back from Phoenix)
    assert not {k for s in spans for k in attrs(s)} & DERIVED_BY_PHOENIX
    assert not any("openinference.span.kind" in attrs(s) for s in spans)  # from the operation
    assert ra["gen_ai.usage.input_tokens"] == TURN["usage"]["input"] == 3022
    assert ra["gen_ai.usage.output_tokens"] == 314
    assert ra["gen_ai.usage.cache_read.input_tokens"] == 1500
    assert ra["gen_ai.usage.reasoning.output_tokens"] == 90
    assert "llm.token_count.prompt" not in ra  # totals are not counted twice by Phoenix
    assert ra["input.value"] == "Please run echo hello"
    assert ra["output.value"] == "Done: the command printed hello."
    assert json.loads(ra["gen_ai.input.messages"])[0]["parts"][0]["content"] == \
        "Please run echo hello"
    chats = names["chat gpt-fake"]
    assert all(c.kind == Span.SPAN_KIND_CLIENT for c in chats)
    usages = [s["usage"] for s in TURN["steps"] if s["action"] == "model_request"]
    for c, u in zip(chats, usages):
        a = attrs(c)
        assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "openai"
        assert a["gen_ai.request.model"] == "gpt-fake"
        assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == \
            (u["input"], u["output"]) and u["input"] + u["output"] == u["total"]
        assert a["gen_ai.usage.cache_read.input_tokens"] == u["cached"]
        assert a["llm.token_count.completion_details.reasoning"] == u["reasoning"]
        assert a["gen_ai.usage.reasoning.output_tokens"] == u["reasoning"]
    # the chat spans sum to the turn's usage
    assert sum(attrs(c)["gen_ai.usage.input_tokens"] for c in chats) == TURN["usage"]["input"]
    tool = names["execute_tool Bash"][0]
    ta = attrs(tool)
    assert ta["gen_ai.tool.name"] == "Bash" and ta["gen_ai.operation.name"] == "execute_tool"
    assert ta["gen_ai.tool.call.id"] == "call_fake_1"
    assert ta["process.exit.code"] == 0 and ta["process.command_line"] == "echo hello"
    assert ta["input.value"] == ta["gen_ai.tool.call.arguments"] == "echo hello"
    assert ta["gen_ai.tool.call.result"] == "hello\n"
    assert "output.value" not in ta  # Phoenix's output.value of a tool: the call result
    assert tool.status.code == Status.STATUS_CODE_UNSET
    for s in spans:
        a = attrs(s)
        assert a["session.id"] == a["gen_ai.conversation.id"] == TURN["session_id"]
    # times: each step's own start/end, in ns; the root covers them
    step = next(s for s in TURN["steps"] if s["action"] == "tool_use")
    assert tool.start_time_unix_nano == round(step["started_at"] * 1e9)
    assert tool.end_time_unix_nano == round(step["ended_at"] * 1e9)
    assert all(root.start_time_unix_nano <= s.start_time_unix_nano <= s.end_time_unix_nano
               <= root.end_time_unix_nano for s in spans[1:])


def test_ids_are_deterministic_and_derived_from_the_spool_trace_id():
    a = otlp_wire.encode(otlp.export_request([(OPTS, BODIES["turn"])]))
    b = otlp_wire.encode(otlp.export_request([(OPTS, copy.deepcopy(BODIES["turn"]))]))
    assert a == b
    spans = otlp.spans_for(TURN, OPTS)
    assert spans[0].trace_id.hex() == TURN["trace_id"].replace("-", "")
    other = otlp.spans_for(BODIES["turn"][1], OPTS)
    assert other[0].trace_id != spans[0].trace_id
    assert not {s.span_id for s in spans} & {s.span_id for s in other}
    assert otlp.otel_trace_id("t1") == otlp.otel_trace_id("t1") != otlp.otel_trace_id("t2")
    assert len(otlp.otel_trace_id("t1")) == 16


def test_failed_command_is_an_error_span_with_error_type():
    body = copy.deepcopy(TURN)
    step = next(s for s in body["steps"] if s["action"] == "tool_use")
    step.update(exit_code=3, command="sh -c 'exit 3'",
                error={"type": "ToolError", "message": "command exited with code 3",
                       "recoverable": True})
    tool = by_name(otlp.spans_for(body, OPTS))["execute_tool Bash"][0]
    assert tool.status.code == Status.STATUS_CODE_ERROR
    assert attrs(tool)["error.type"] == "ToolError" and attrs(tool)["process.exit.code"] == 3
    assert "code 3" in tool.status.message
    step.pop("error")  # a non-zero exit alone is enough
    tool = by_name(otlp.spans_for(body, OPTS))["execute_tool Bash"][0]
    assert tool.status.code == Status.STATUS_CODE_ERROR and attrs(tool)["error.type"] == "ToolError"


def test_compaction_subagent_and_point_steps():
    body = copy.deepcopy(TURN)
    t = body["started_at"]
    body["steps"] += [
        {"number": 10, "action": "compaction", "description": "Context compaction (auto)",
         "started_at": t + 0.01, "ended_at": t + 0.02, "status": "completed"},
        {"number": 11, "action": "subagent_start", "description": "Subagent started: explorer",
         "started_at": t + 0.03, "ended_at": t + 0.03, "agent_id": "child-1"},
        {"number": 12, "action": "subagent_stop", "description": "Subagent stopped: explorer",
         "started_at": t + 0.09, "ended_at": t + 0.09, "agent_id": "child-1",
         "output_preview": "found it"},
        {"number": 13, "action": "interrupt", "description": "Turn interrupted",
         "started_at": t + 0.1, "ended_at": t + 0.1,
         "error": {"type": "Interrupted", "message": "the turn was interrupted"}},
    ]
    spans = otlp.spans_for(body, OPTS)
    names = by_name(spans)
    comp = names["compaction"][0]
    assert attrs(comp)["openinference.span.kind"] == "CHAIN"
    assert comp.end_time_unix_nano - comp.start_time_unix_nano == round(0.01 * 1e9, -3) or \
        abs(comp.end_time_unix_nano - comp.start_time_unix_nano - 10_000_000) < 1000
    sub = names["invoke_agent explorer"][0]
    sa = attrs(sub)
    assert sa["gen_ai.operation.name"] == "invoke_agent" and sa["gen_ai.agent.id"] == "child-1"
    assert sa["output.value"] == "found it"
    assert abs(sub.end_time_unix_nano - sub.start_time_unix_nano - 60_000_000) < 1000
    root = spans[0]
    assert [e.name for e in root.events] == ["interrupt"]
    assert root.status.code == Status.STATUS_CODE_ERROR and attrs(root)["error.type"] == "Interrupted"


def test_content_switch_and_redaction_before_the_cut():
    secret = "sk-proj-" + "A" * 40
    body = copy.deepcopy(TURN)
    body["input_summary"] = f"use OPENAI_API_KEY={secret} please"
    tool = next(s for s in body["steps"] if s["action"] == "tool_use")
    tool["command"] = f"curl -H 'Authorization: Bearer {secret}' " + "x" * 500
    data = otlp_wire.encode(otlp.export_request([(OPTS, [body])]))
    assert secret.encode() not in data and b"[REDACTED:" in data
    ta = attrs(by_name(otlp.spans_for(body, OPTS))["execute_tool Bash"][0])
    assert len(ta["process.command_line"]) == OPTS.max_input_preview
    assert "[REDACTED:" in ta["process.command_line"]  # redacted, then cut
    off = otlp.Options(capture_content=False)
    spans = otlp.spans_for(body, off)
    data = otlp_wire.encode(otlp.export_request([(off, [body])]))
    assert b"please" not in data and b"curl" not in data and b"hello\n" not in data
    assert not any(k in attrs(s) for s in spans for k in (
        "input.value", "output.value", "process.command_line", "gen_ai.input.messages",
        "gen_ai.tool.call.result"))
    assert attrs(spans[1])["gen_ai.usage.input_tokens"] == 1011  # the numbers stay


def test_capture_content_and_resource_from_env():
    assert otlp_sink.capture_content({}) is True
    for v in ("false", "0", "NO_CONTENT", "event_only"):
        assert otlp_sink.capture_content({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": v}) \
            is False
    assert otlp_sink.capture_content({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true"})
    o = otlp_sink.options_from_env({"OTEL_SERVICE_NAME": "my-agents",
                               "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=dev, team=a%2Cb,"
                                                           "service.name=ignored,bad"})
    res = attrs(otlp.resource(o))
    assert res["service.name"] == "my-agents"
    assert res["deployment.environment"] == "dev" and res["team"] == "a,b"
    assert res["openinference.project.name"] == "my-agents"
    o2 = otlp_sink.options_from_env({"OTEL_RESOURCE_ATTRIBUTES":
                                "service.name=svc,openinference.project.name=proj"})
    r2 = attrs(otlp.resource(o2))
    assert (r2["service.name"], r2["openinference.project.name"]) == ("svc", "proj")


def test_json_encoding_uses_hex_ids_and_round_trips():
    req = otlp.export_request([(OPTS, BODIES["turn"])])
    data = otlp_wire.encode(req, "http/json")
    d = json.loads(data)
    span = d["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert span["traceId"] == TURN["trace_id"].replace("-", "")
    assert len(span["spanId"]) == 16 and span["kind"] == 1
    assert otlp_wire.decode_request(data, "http/json") == req


def test_session_summary_maps_like_a_turn():
    spans = otlp.spans_for(SESSION, OPTS)
    assert spans[0].name == "invoke_agent codex"
    assert attrs(spans[0])["spool.kind"] == "session"
    assert len([s for s in spans if s.name.startswith("chat")]) == 4


def test_partial_success_parse():
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceResponse)

    r = ExportTraceServiceResponse()
    assert otlp_wire.partial_success(r.SerializeToString(), "application/x-protobuf") is None
    r.partial_success.rejected_spans = 2
    r.partial_success.error_message = "too old"
    assert otlp_wire.partial_success(r.SerializeToString(), "application/x-protobuf") == (2, "too old")
    assert otlp_wire.partial_success(b'{"partialSuccess":{"rejectedSpans":"3","errorMessage":"x"}}',
                                "application/json") == (3, "x")
    assert otlp_wire.partial_success(b"<html>", "text/html") is None


_text = st.text(max_size=40)
_num = st.one_of(st.none(), st.integers(-5, 10**9), st.floats(allow_nan=True), st.text(max_size=5))
_step = st.fixed_dictionaries({}, optional={
    "number": _num, "action": st.sampled_from(["model_request", "tool_use", "compaction",
                                               "subagent_start", "subagent_stop", "interrupt",
                                               "user_prompt", "permission_request", "weird"]),
    "started_at": _num, "ended_at": _num, "tool_name": _text, "command": _text,
    "exit_code": _num, "model": _text, "agent_id": _text, "output_preview": _text,
    "usage": st.dictionaries(st.sampled_from(["input", "output", "cached", "reasoning",
                                              "total", "cache_write"]), _num),
    "error": st.one_of(st.none(), st.fixed_dictionaries({"type": _text, "message": _text}))})


@pytest.mark.slow  # 150 generated bodies: 25 s under load
@settings(max_examples=150, deadline=None)
@given(st.fixed_dictionaries({"trace_id": _text, "session_id": _text}, optional={
    "started_at": _num, "ended_at": _num, "steps": st.lists(_step, max_size=8),
    "usage": st.dictionaries(st.sampled_from(["input", "output"]), _num),
    "input_summary": _text, "output_summary": _text, "environment": st.just({})}))
def test_any_body_maps_to_valid_spans(body):
    spans = otlp.spans_for(body, OPTS)
    root = spans[0]
    assert root.name == "invoke_agent codex" and len(root.trace_id) == 16
    assert len({s.span_id for s in spans}) == len(spans)
    for s in spans:
        assert len(s.span_id) == 8 and any(s.span_id)
        assert s.end_time_unix_nano >= s.start_time_unix_nano
        assert s.end_time_unix_nano <= root.end_time_unix_nano
    data = otlp_wire.encode(otlp.export_request([(OPTS, [body])]))
    assert otlp_wire.decode_request(data) == otlp.export_request([(OPTS, [body])])


def _priced(body, model):
    """``body`` as if its requests used ``model``, priced as aggregation prices it."""
    from spool.cost import add_cost

    b = copy.deepcopy(body)
    b["environment"]["model"] = model
    b["steps"] = [dict(s, model=model) if s.get("action") == "model_request" else s
                  for s in b["steps"]]
    return add_cost(b)


def test_cost_on_chat_spans_and_the_turn_total_on_the_root():
    body = _priced(TURN, "gpt-5")
    costs = [s["cost_usd"] for s in body["steps"] if s.get("action") == "model_request"]
    assert len(costs) == 2 and all(c > 0 for c in costs)
    spans = otlp.spans_for(body, OPTS)
    chats = [attrs(s) for s in spans if s.name.startswith("chat")]
    assert [a["llm.cost.total"] for a in chats] == costs
    assert [a["spool.cost_usd"] for a in chats] == costs
    root = attrs(spans[0])
    assert root["spool.cost_usd"] == body["cost_usd"] == pytest.approx(sum(costs))
    assert "llm.cost.total" not in root and "spool.cost_flags" not in root  # not counted twice
    unknown = _priced(TURN, "gpt-fake")
    spans = otlp.spans_for(unknown, OPTS)
    assert not any("llm.cost.total" in attrs(s) or "spool.cost_usd" in attrs(s) for s in spans)
    assert attrs(spans[0])["spool.cost_flags"] == "no price for model gpt-fake"
