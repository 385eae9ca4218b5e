"""spool's neutral trace body (``spool.trace/1``) as OpenTelemetry spans: pure functions.

One spool trace becomes one OTel trace (:func:`spans_for`); many become one
``ExportTraceServiceRequest`` (:func:`export_request`), encoded as OTLP protobuf or OTLP/JSON by
spool.otlp_wire.  No I/O, no clock: the same bodies and :class:`Options` always give the same
bytes, so a resend is byte-identical and backends that drop exact duplicates (Phoenix, MLflow)
store a trace once.  The options come from the environment in spool.sinks.otlp.

Spans (GenAI semantic conventions, plus the OpenInference names Arize Phoenix renders by):

=============================  ========  =============================================
``invoke_agent codex``         INTERNAL  the root: the turn (AGENT); turn token totals,
                                         prompt (``input.value``) and answer
``chat {model}``               CLIENT    one per ``model_request`` step (LLM), its usage
``execute_tool {tool}``        INTERNAL  one per ``tool_use`` step (TOOL); command, exit
                                         code; status ERROR + ``error.type`` on failure
``invoke_agent {agent_type}``  INTERNAL  a subagent (AGENT), SubagentStart..SubagentStop
``compaction``                 INTERNAL  a context compaction (CHAIN)
``permission_request {tool}``  INTERNAL  a permission prompt (CHAIN)
=============================  ========  =============================================

Every span carries ``gen_ai.conversation.id`` and ``session.id`` = the Codex session id.  Point
steps (session start/end, interrupt, unknown events) are span events on the root; an interrupt
or a failed step also sets the root's status to ERROR.

Token counts: spool's ``input`` includes cached tokens (as OpenAI and ``gen_ai.usage.input_tokens``
count them); ``output`` includes reasoning.  LLM spans carry ``gen_ai.usage.*`` and
``llm.token_count.*`` (prompt/completion/total, ``prompt_details.cache_read``/``cache_write``,
``completion_details.reasoning``: the two Phoenix does not derive from ``gen_ai.*``).  The root
carries the turn totals as ``gen_ai.usage.*`` only, so a backend that sums ``llm.token_count`` over
a trace does not count them twice.  Cost likewise: each LLM span carries its request's
``llm.cost.total`` (OpenInference, which Phoenix reads) and ``spool.cost_usd``; the root only
``spool.cost_usd`` (the turn's) and ``spool.cost_flags``; an unpriced request has neither.

Ids: the OTel trace id is the spool trace id's 16 UUID bytes (any other id: the first 16 bytes of
its SHA-256); span ids are the first 8 bytes of SHA-256(trace id, step number) (the root: "root").

Content (prompt, answer, commands, tool output) is sent only when ``Options.capture_content``
(``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``; see :func:`capture_content`): redacted
first (spool.redact), then cut to the preview limits.  Every free text that leaves (content,
step descriptions, error messages) is redacted; identifiers (model, tool name, ids, git branch)
are sent as they are.  Only the strings that are emitted are redacted, not the whole body.
"""
from __future__ import annotations

import hashlib
import json
import math
import uuid
from dataclasses import dataclass
from collections.abc import Iterable, Mapping, Sequence  # (typing's are slower in isinstance)
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans, Span, Status

from . import __version__
from .otlp_wire import MAX_INT, attrs as _attrs, put as _put
from .redact import redact_text, scrub_tail

AGENT_NAME = "codex"
PROVIDER = "openai"
DEFAULT_SERVICE_NAME = "codex"
INPUT_SUMMARY_MAX = 3000
OUTPUT_SUMMARY_MAX = 8000
ERROR_MESSAGE_MAX = 1000


@dataclass(frozen=True)
class Options:
    """What the rendering depends on besides the trace body (all from configuration)."""

    service_name: str = DEFAULT_SERVICE_NAME
    resource_attributes: tuple[tuple[str, str], ...] = ()  # OTEL_RESOURCE_ATTRIBUTES, in order
    capture_content: bool = True
    max_input_preview: int = 200
    max_output_preview: int = 300
    redact: bool = True


# --- configuration parsing (pure) ------------------------------------------------

# --- ids ---------------------------------------------------------------------------

def otel_trace_id(spool_trace_id: str) -> bytes:
    try:
        return uuid.UUID(spool_trace_id).bytes
    except (ValueError, AttributeError, TypeError):
        return _nonzero(hashlib.sha256(f"spool.trace\x1f{spool_trace_id}".encode()).digest()[:16])


def span_id(spool_trace_id: str, key: str | int) -> bytes:
    return _nonzero(hashlib.sha256(f"spool.span\x1f{spool_trace_id}\x1f{key}".encode())
                    .digest()[:8])


def _nonzero(b: bytes) -> bytes:
    return b if any(b) else b[:-1] + b"\x01"  # an all-zero id is invalid in OTLP


_MAX_NS = MAX_INT


def _ns(t: Any) -> int:
    """Epoch seconds as nanoseconds; anything not a usable time is 0 (then the trace's)."""
    if t.__class__ is float and 0 < t < _MAX_NS / 1e9:  # the usual case, first
        return int(round(t * 1e9))
    if not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t) or t <= 0:
        return 0
    return int(round(float(t) * 1e9)) if t < _MAX_NS / 1e9 else _MAX_NS


def _int(v: Any) -> int:
    """A count: finite numbers (not booleans) as int64, anything else 0."""
    if v.__class__ is int and -_MAX_NS <= v <= _MAX_NS:  # the usual case, first
        return v
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return 0
    if isinstance(v, float) and not math.isfinite(v):
        return 0
    return max(min(int(v), _MAX_NS), -_MAX_NS)


def _cost(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _clip(text: Any, limit: int, redacted: bool = False) -> str:
    """``text`` cut to ``limit``; when it is ``redacted`` text, the cut never leaves the
    start of a secret (spool.redact.scrub_tail)."""
    if text is None:
        return ""
    if not isinstance(text, str):
        text = json.dumps(text, ensure_ascii=False, default=str)
    if limit <= 0:
        return ""
    if len(text) <= limit:
        return text
    if limit <= 3:
        return scrub_tail(text[:limit]) if redacted else text[:limit]
    kept = text[: limit - 3]
    return (scrub_tail(kept) if redacted else kept) + "..."


# --- the mapping -----------------------------------------------------------------------

def _usage_attrs(u: Mapping[str, Any], *, openinference: bool) -> list[tuple[str, Any]]:
    inp, out = _int(u.get("input")), _int(u.get("output"))
    cached, write, reasoning = _int(u.get("cached")), _int(u.get("cache_write")), _int(
        u.get("reasoning"))
    pairs: list[tuple[str, Any]] = [
        ("gen_ai.usage.input_tokens", inp), ("gen_ai.usage.output_tokens", out),
        ("gen_ai.usage.cache_read.input_tokens", cached),
        ("gen_ai.usage.reasoning.output_tokens", reasoning)]
    if write:
        pairs += [("gen_ai.usage.cache_write.input_tokens", write),
                  ("gen_ai.usage.cache_creation.input_tokens", write)]
    if openinference:
        pairs += [("llm.token_count.prompt", inp), ("llm.token_count.completion", out),
                  ("llm.token_count.total", _int(u.get("total")) or inp + out),
                  ("llm.token_count.prompt_details.cache_read", cached),
                  ("llm.token_count.completion_details.reasoning", reasoning)]
        if write:
            pairs.append(("llm.token_count.prompt_details.cache_write", write))
    return pairs


def _failed(step: Mapping[str, Any]) -> bool:
    if isinstance(step.get("error"), Mapping):
        return True
    code = step.get("exit_code")
    return (isinstance(code, int) and code != 0) or step.get("status") in ("failed", "declined")


def _set_status(span: Span, step: Mapping[str, Any], default_type: str,
                attrs: list[tuple[str, Any]], opts: Options, text) -> None:
    if not _failed(step):
        return
    err = step.get("error") if isinstance(step.get("error"), Mapping) else {}
    etype = str(err.get("type") or default_type)
    attrs.append(("error.type", etype))
    message = text(err.get("message") or etype, ERROR_MESSAGE_MAX)
    # the message names the command: content
    span.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR,
                                message=message if opts.capture_content else etype))


def _template(pairs: list[tuple[str, Any]]) -> Span:
    sp = Span()
    _put(sp.attributes, pairs)
    return sp


_CHAT = _template([("gen_ai.operation.name", "chat"), ("gen_ai.provider.name", PROVIDER),
                   ("openinference.span.kind", "LLM"), ("llm.provider", PROVIDER),
                   ("llm.system", PROVIDER)])
_TOOL = _template([("gen_ai.operation.name", "execute_tool"), ("gen_ai.provider.name", PROVIDER),
                   ("gen_ai.tool.type", "function"), ("openinference.span.kind", "TOOL")])


class _Builder:
    def __init__(self, body: Mapping[str, Any], opts: Options, into: Any) -> None:
        self.body = body
        self.into = into  # the repeated Span field the spans are added to
        self.opts = opts
        self.tid = str(body.get("trace_id") or "")
        self.otid = otel_trace_id(self.tid)
        self.root_id = span_id(self.tid, "root")
        # A subagent's trace joins its parent's: same OTLP trace, its root under
        # the parent's spawn_agent tool span (span ids are keyed by step place).
        agent = body.get("agent")
        self.agent = agent if isinstance(agent, Mapping) else None
        self.root_parent: bytes | None = None
        if self.agent and self.agent.get("parent_trace_id"):
            ptid = str(self.agent["parent_trace_id"])
            self.otid = otel_trace_id(ptid)
            if isinstance(self.agent.get("spawn_step"), int):
                self.root_parent = span_id(ptid, self.agent["spawn_step"])
        self.session = str(body.get("session_id") or "")
        self.t0 = _ns(body.get("started_at"))
        self.t1 = max(_ns(body.get("ended_at")), self.t0)
        self._redacted: dict[str, str] = {}
        self._common: Span | None = None

    def common(self) -> list[tuple[str, Any]]:
        return [("gen_ai.conversation.id", self.session), ("session.id", self.session)]

    def span(self, key: str | int, name: str, kind: int, start: int, end: int,
             parent: bytes | None, template: Span | None = None) -> Span:
        start = start or self.t0
        sp = self.into.add(trace_id=self.otid, span_id=span_id(self.tid, key)
                           if key != "root" else self.root_id, parent_span_id=parent or b"",
                           name=name, kind=kind, start_time_unix_nano=start,
                           end_time_unix_nano=max(end or start, start))
        if template is not None:  # constant attributes in one copy (the hot path)
            sp.MergeFrom(template)
            if self._common is None:
                self._common = Span()
                _put(self._common.attributes, self.common())
            sp.MergeFrom(self._common)
        return sp

    def text(self, v: Any, limit: int) -> str:
        """Free text as it may leave the machine: redacted (memoised), then cut."""
        if v is None:
            return ""
        if not isinstance(v, str):
            v = json.dumps(v, ensure_ascii=False, default=str)
        if self.opts.redact and v:
            r = self._redacted.get(v)
            if r is None:
                r = self._redacted[v] = redact_text(v)
            v = r
        return _clip(v, limit, self.opts.redact)

    def content(self, pairs: list[tuple[str, Any]], items: Iterable[tuple[str, Any, int]]) -> None:
        if self.opts.capture_content:
            pairs.extend((k, self.text(v, n)) for k, v, n in items if v)

    def build(self) -> list[Span]:
        b, o = self.body, self.opts
        steps = [s for s in (b.get("steps") or []) if isinstance(s, Mapping)]
        env = b.get("environment") if isinstance(b.get("environment"), Mapping) else {}
        model = env.get("model") or next(
            (s.get("model") for s in steps if s.get("model")), None)
        agent_name = str(self.agent.get("agent_type") or "agent") if self.agent else AGENT_NAME
        root = self.span("root", f"invoke_agent {agent_name}", Span.SPAN_KIND_INTERNAL,
                         self.t0, self.t1, self.root_parent)
        usage = b.get("usage") if isinstance(b.get("usage"), Mapping) else {}
        ra: list[tuple[str, Any]] = [
            ("gen_ai.operation.name", "invoke_agent"), ("gen_ai.agent.name", agent_name),
            ("gen_ai.provider.name", PROVIDER), ("gen_ai.request.model", model),
            *self.common(), ("openinference.span.kind", "AGENT"),
            ("spool.trace_id", self.tid), ("spool.kind", b.get("kind")),
            ("spool.turn_id", b.get("turn_id")), ("spool.revision", _int(b.get("revision"))),
            ("spool.supersedes", b.get("supersedes")),
            ("spool.incomplete", bool(b.get("incomplete"))),
            ("spool.usage_source", b.get("usage_source")),
            ("codex.version", env.get("codex_version")),
            ("spool.run_id", env.get("run_id")),
            ("codex.permission_mode", env.get("permission_mode")),
            ("vcs.ref.head.name", env.get("git_branch")),
            ("vcs.ref.head.revision", env.get("git_commit")),
        ]
        if self.agent:
            a = self.agent
            ra += [("gen_ai.agent.id", a.get("agent_id")),
                   ("spool.agent.nickname", a.get("nickname")),
                   ("spool.agent.depth", _int(a.get("depth"))),
                   ("spool.parent.trace_id", a.get("parent_trace_id")),
                   ("spool.parent.turn_id", a.get("parent_turn_id")),
                   ("spool.parent.spawn_step", _int(a.get("spawn_step"))),
                   ("spool.parent.spawn_tool_use_id", a.get("spawn_tool_use_id"))]
        ra += _usage_attrs(usage, openinference=False)
        ra += [("spool.cost_usd", _cost(b.get("cost_usd"))),  # the turn's; not llm.cost.*
               ("spool.cost_flags", "; ".join(map(str, b.get("cost_flags") or ())))]
        self.content(ra, [("input.value", b.get("input_summary"), INPUT_SUMMARY_MAX),
                          ("output.value", b.get("output_summary"), OUTPUT_SUMMARY_MAX)])
        if o.capture_content and b.get("input_summary"):
            ra.append(("gen_ai.input.messages", json.dumps(
                [{"role": "user", "parts": [{"type": "text", "content": self.text(
                    b["input_summary"], INPUT_SUMMARY_MAX)}]}], ensure_ascii=False)))
        if o.capture_content and b.get("output_summary"):
            ra.append(("gen_ai.output.messages", json.dumps(
                [{"role": "assistant", "parts": [{"type": "text", "content": self.text(
                    b["output_summary"], OUTPUT_SUMMARY_MAX)}], "finish_reason": "stop"}],
                ensure_ascii=False)))
        out = [root]
        subagents: dict[str, Span] = {}
        root_error: str | None = None
        for position, s in enumerate(steps, 1):
            action = s.get("action")
            key = position  # the span id's key: unique even if step numbers are not
            start, end = _ns(s.get("started_at")), _ns(s.get("ended_at"))
            if action == "model_request":
                out.append(self.chat(s, key, start, end, model))
            elif action == "tool_use":
                out.append(self.tool(s, key, start, end))
            elif (action in ("subagent_start", "subagent_stop") and self.agent
                  and s.get("agent_id") == self.agent.get("agent_id")):
                continue  # this trace's own start/stop: its root span is the agent
            elif action == "subagent_start":
                sp = self.subagent(s, key, start)
                subagents[str(s.get("agent_id") or key)] = sp
                out.append(sp)
            elif action == "subagent_stop" and str(s.get("agent_id")) in subagents:
                sp = subagents.pop(str(s.get("agent_id")))
                sp.end_time_unix_nano = max(end or start, sp.start_time_unix_nano)
                if o.capture_content and s.get("output_preview"):
                    _put(sp.attributes, [("output.value", self.text(
                        s["output_preview"], o.max_output_preview))])
            elif action in ("compaction", "permission_request"):
                out.append(self.chain(s, key, start, end))
            elif action == "user_prompt":
                continue  # the root's input
            else:
                ev = root.events.add(time_unix_nano=start or end or self.t0,
                                     name=str(action or "event"))
                _put(ev.attributes, [("spool.step.description",
                                      self.text(s.get("description"), 200)),
                                     ("spool.step.number", _int(s.get("number")))])
                if isinstance(s.get("error"), Mapping):
                    root_error = str(s["error"].get("type") or "Error")
        if root_error:
            ra.append(("error.type", root_error))
            root.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message=root_error))
        _put(root.attributes, ra)
        for sp in out[1:]:  # children never outlast the root (late Post events do)
            root.end_time_unix_nano = max(root.end_time_unix_nano, sp.end_time_unix_nano)
        return out

    def chat(self, s: Mapping[str, Any], key: int, start: int, end: int, model: Any) -> Span:
        m = s.get("model") or model
        sp = self.span(key, f"chat {m}" if m else "chat", Span.SPAN_KIND_CLIENT, start, end,
                       self.root_id, _CHAT)
        a: list[tuple[str, Any]] = [
            ("gen_ai.request.model", m), ("llm.model_name", m),
            ("spool.step.number", _int(s.get("number"))), ("spool.step.status", s.get("status"))]
        if isinstance(s.get("usage"), Mapping):
            a += _usage_attrs(s["usage"], openinference=True)
        c = _cost(s.get("cost_usd"))  # None (unpriced): both left out
        a += [("llm.cost.total", c), ("spool.cost_usd", c)]
        _set_status(sp, s, "ModelError", a, self.opts, self.text)
        _put(sp.attributes, a)
        return sp

    def tool(self, s: Mapping[str, Any], key: int, start: int, end: int) -> Span:
        o = self.opts
        name = str(s.get("tool_name") or "tool")
        sp = self.span(key, f"execute_tool {name}", Span.SPAN_KIND_INTERNAL, start, end,
                       self.root_id, _TOOL)
        a: list[tuple[str, Any]] = [
            ("gen_ai.tool.name", name), ("gen_ai.tool.call.id", s.get("tool_use_id")),
            ("tool.name", name),
            ("process.exit.code", s.get("exit_code") if isinstance(s.get("exit_code"), int)
             else None),
            ("spool.step.number", _int(s.get("number"))), ("spool.step.status", s.get("status"))]
        command = s.get("command") or s.get("input_preview")
        self.content(a, [("process.command_line", command, o.max_input_preview),
                         ("gen_ai.tool.call.arguments", command, o.max_input_preview),
                         ("input.value", command, o.max_input_preview),
                         ("gen_ai.tool.call.result", s.get("output_preview"),
                          o.max_output_preview),
                         ("output.value", s.get("output_preview"), o.max_output_preview)])
        _set_status(sp, s, "ToolError", a, o, self.text)
        _put(sp.attributes, a)
        return sp

    def subagent(self, s: Mapping[str, Any], key: int, start: int) -> Span:
        desc = str(s.get("description") or "")
        kind = desc.split(": ", 1)[1] if ": " in desc else "agent"
        sp = self.span(key, f"invoke_agent {kind}", Span.SPAN_KIND_INTERNAL, start, start,
                       self.root_id)
        _put(sp.attributes, ([
            ("gen_ai.operation.name", "invoke_agent"), ("gen_ai.agent.name", kind),
            ("gen_ai.agent.id", s.get("agent_id")), ("gen_ai.provider.name", PROVIDER),
            *self.common(), ("openinference.span.kind", "AGENT"), ("spool.step.number", _int(s.get("number")))]))
        return sp

    def chain(self, s: Mapping[str, Any], key: int, start: int, end: int) -> Span:
        action = str(s.get("action"))
        name = action if action == "compaction" else f"{action} {s.get('tool_name') or 'tool'}"
        sp = self.span(key, name, Span.SPAN_KIND_INTERNAL, start, end, self.root_id)
        a: list[tuple[str, Any]] = [*self.common(), ("openinference.span.kind", "CHAIN"),
                                    ("spool.step.number", _int(s.get("number"))),
                                    ("spool.step.description",
                                     self.text(s.get("description"), 200)),
                                    ("spool.step.status", s.get("status"))]
        if action == "permission_request":
            a.append(("gen_ai.tool.name", s.get("tool_name")))
            self.content(a, [("input.value", s.get("command"), self.opts.max_input_preview)])
        _set_status(sp, s, "Error", a, self.opts, self.text)
        _put(sp.attributes, a)
        return sp


def spans_for(body: Mapping[str, Any], opts: Options, into: Any = None) -> list[Span]:
    """The spans of one spool trace body (root first), added to ``into`` (a repeated Span
    field, e.g. ``ScopeSpans.spans``) when given."""
    if into is None:
        into = ScopeSpans().spans
    return _Builder(body, opts, into).build()


def resource(opts: Options) -> Resource:
    attrs = dict(opts.resource_attributes)
    pairs = [("service.name", opts.service_name), ("telemetry.sdk.name", "spool"),
             ("telemetry.sdk.language", "python"), ("telemetry.sdk.version", __version__)]
    pairs += [(k, v) for k, v in opts.resource_attributes]
    if "openinference.project.name" not in attrs:
        pairs.append(("openinference.project.name", opts.service_name))
    return Resource(attributes=_attrs(pairs))


def export_request(groups: Sequence[tuple[Options, Sequence[Mapping[str, Any]]]]
                   ) -> ExportTraceServiceRequest:
    """One request for many traces: a ResourceSpans per (options, bodies) group."""
    req = ExportTraceServiceRequest()
    scope = InstrumentationScope(name="spool", version=__version__)
    for opts, bodies in groups:
        rs = req.resource_spans.add(resource=resource(opts))
        ss = rs.scope_spans.add(scope=scope)
        for body in bodies:
            spans_for(body, opts, ss.spans)
    return req
