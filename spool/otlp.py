"""spool's neutral trace body (``spool.trace/1``) as OpenTelemetry spans: pure functions.

One spool trace becomes one OTel trace (:func:`spans_for`); many become one
``ExportTraceServiceRequest`` (:func:`export_request`), encoded as OTLP protobuf or OTLP/JSON by
spool.otlp_wire.  No I/O, no clock: the same bodies and :class:`Options` always give the same
bytes, so a resend is byte-identical and backends that drop exact duplicates (Phoenix, MLflow)
store a trace once.  The options come from the environment in spool.sinks.otlp.

Spans (GenAI semantic conventions, plus the OpenInference names Arize Phoenix reads and does not
derive from them: the attribute tables are in spool/otlp_attrs.py):

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

Token counts, cost and which names each span carries: spool/otlp_attrs.py.  The root carries
the turn totals as ``gen_ai.usage.*`` only.

Ids: the OTel trace id is the spool trace id's 16 UUID bytes (any other id: the first 16 bytes of
its SHA-256); span ids are the first 8 bytes of SHA-256(trace id, step number) (the root: "root").

Content (prompt, answer, commands, tool output) is sent only when ``Options.capture_content``
(``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``; see :func:`capture_content`): redacted
first (spool.redact), then cut to the preview limits.  Every free text that leaves (content,
step descriptions, error messages) is redacted; identifiers (model, tool name, ids, git branch)
are sent as they are.  Only the strings that are emitted are redacted, not the whole body,
each once per trace.
"""
from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from collections.abc import Mapping, Sequence  # (typing's are slower in isinstance)
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans, Span, Status

from . import __version__
from . import otlp_attrs as A
from .otlp_wire import attrs as _attrs, put as _put
from .redact import redact_text

DEFAULT_SERVICE_NAME = "codex"
AGENT_NAME = A.AGENT_NAME
_INTERNAL, _CLIENT = Span.SPAN_KIND_INTERNAL, Span.SPAN_KIND_CLIENT
_ERROR = Status.STATUS_CODE_ERROR


@dataclass(frozen=True)
class Options:
    """What the rendering depends on besides the trace body (all from configuration)."""

    service_name: str = DEFAULT_SERVICE_NAME
    resource_attributes: tuple[tuple[str, str], ...] = ()  # OTEL_RESOURCE_ATTRIBUTES, in order
    capture_content: bool = True
    max_input_preview: int = 200
    max_output_preview: int = 300
    redact: bool = True


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


# --- the mapping -----------------------------------------------------------------------

class _Builder:
    """The spans of one trace body, added to ``into`` (a repeated Span field)."""

    def __init__(self, body: Mapping[str, Any], opts: Options, into: Any,
                 templates: A.Templates) -> None:
        self.body = body
        self.add = into.add
        self.opts = opts
        self.content = opts.capture_content
        self.tid = str(body.get("trace_id") or "")
        self.otid = otel_trace_id(self.tid)
        self.root_id = span_id(self.tid, "root")
        # A subagent's trace joins its parent's: same OTLP trace, its root under
        # the parent's spawn_agent tool span (span ids are keyed by step place).
        agent = body.get("agent")
        self.agent = agent if agent is not None and isinstance(agent, Mapping) else None
        self.root_parent = b""
        if self.agent and self.agent.get("parent_trace_id"):
            ptid = str(self.agent["parent_trace_id"])
            self.otid = otel_trace_id(ptid)
            if isinstance(self.agent.get("spawn_step"), int):
                self.root_parent = span_id(ptid, self.agent["spawn_step"])
        self.session = session = str(body.get("session_id") or "")
        self.templates = templates
        self.common = (("gen_ai.conversation.id", session), ("session.id", session))
        self.t0 = A.ns(body.get("started_at"))
        self.t1 = max(A.ns(body.get("ended_at")), self.t0)
        self._texts: dict[tuple[Any, int], str] = {}

    def span(self, key: int, name: str, kind: int, start: int, end: int, base: Span,
             *shared: tuple[str, Any]) -> Span:
        """A child of the root with ``base``'s attributes, the session's and ``shared``."""
        start = start or self.t0
        sp = self.add(trace_id=self.otid, span_id=span_id(self.tid, key),
                      parent_span_id=self.root_id, name=name, kind=kind,
                      start_time_unix_nano=start, end_time_unix_nano=end if end > start
                      else start)
        # the attributes shared with other spans: one C copy (made once per request)
        sp.MergeFromString(self.templates.get(base, (*self.common, *shared)))
        return sp

    def text(self, v: Any, limit: int) -> str:
        """Free text as it may leave the machine: redacted, then cut (each text once)."""
        if not v:
            return ""
        key = (v, limit) if v.__class__ is str else (A.as_text(v), limit)
        out = self._texts.get(key)
        if out is None:
            t = key[0]
            redact = self.opts.redact
            out = self._texts[key] = A.clip(redact_text(t) if redact else t, limit, redact)
        return out

    def status(self, sp: Span, s: Mapping[str, Any], default_type: str,
               a: list[tuple[str, Any]]) -> None:
        if not A.failed(s):
            return
        err = s.get("error") if isinstance(s.get("error"), Mapping) else {}
        etype = str(err.get("type") or default_type)
        a.append(("error.type", etype))
        # the message names the command: content
        message = self.text(err.get("message") or etype, A.ERROR_MESSAGE_MAX) \
            if self.content else etype
        sp.status.code = _ERROR
        sp.status.message = message

    def build(self) -> list[Span]:
        b, o = self.body, self.opts
        get = b.get
        steps = [s for s in (get("steps") or ()) if s.__class__ is dict or isinstance(s, Mapping)]
        env = get("environment")
        env = env if env.__class__ is dict or isinstance(env, Mapping) else {}
        model = env.get("model") or next(
            (s.get("model") for s in steps if s.get("model")), None)
        agent_name = str(self.agent.get("agent_type") or "agent") if self.agent else AGENT_NAME
        root = self.add(trace_id=self.otid, span_id=self.root_id,
                        parent_span_id=self.root_parent, name=f"invoke_agent {agent_name}",
                        kind=_INTERNAL, start_time_unix_nano=self.t0,
                        end_time_unix_nano=self.t1)
        root.MergeFromString(self.templates.get(A.AGENT, (  # the session's, shared by its turns
            *self.common, ("gen_ai.agent.name", agent_name), ("gen_ai.request.model", model),
            ("spool.kind", get("kind")), ("spool.usage_source", get("usage_source")),
            ("codex.version", env.get("codex_version")), ("spool.run_id", env.get("run_id")),
            ("codex.permission_mode", env.get("permission_mode")),
            ("vcs.ref.head.name", env.get("git_branch")),
            ("vcs.ref.head.revision", env.get("git_commit")),
            ("spool.revision", A.count(get("revision"))), ("spool.supersedes", get("supersedes")),
            ("spool.incomplete", bool(get("incomplete"))),
            ("spool.cost_flags", "; ".join(map(str, get("cost_flags") or ()))))))
        usage = get("usage")
        ra: list[tuple[str, Any]] = [
            ("spool.trace_id", self.tid), ("spool.turn_id", get("turn_id"))]
        if self.agent:
            a = self.agent
            ra += [("gen_ai.agent.id", a.get("agent_id")),
                   ("spool.agent.nickname", a.get("nickname")),
                   ("spool.agent.depth", A.count(a.get("depth"))),
                   ("spool.parent.trace_id", a.get("parent_trace_id")),
                   ("spool.parent.turn_id", a.get("parent_turn_id")),
                   ("spool.parent.spawn_step", A.count(a.get("spawn_step"))),
                   ("spool.parent.spawn_tool_use_id", a.get("spawn_tool_use_id"))]
        ra += A.usage(usage if usage.__class__ is dict or isinstance(usage, Mapping) else {},
                      reasoning_oi=False)
        ra.append(("spool.cost_usd", A.cost(get("cost_usd"))))  # the turn's; not llm.cost.*
        if self.content:
            prompt = self.text(get("input_summary"), A.INPUT_SUMMARY_MAX)
            answer = self.text(get("output_summary"), A.OUTPUT_SUMMARY_MAX)
            if prompt:
                ra += [("input.value", prompt),
                       ("gen_ai.input.messages", A.messages("user", prompt))]
            if answer:
                ra += [("output.value", answer),
                       ("gen_ai.output.messages", A.messages("assistant", answer, "stop"))]
        out = [root]
        subagents: dict[str, Span] = {}
        root_error: str | None = None
        ns = A.ns
        for key, s in enumerate(steps, 1):  # the span id's key: unique even if numbers are not
            action = s.get("action")
            start, end = ns(s.get("started_at")), ns(s.get("ended_at"))
            if action == "model_request":
                out.append(self.chat(s, key, start, end, model))
            elif action == "tool_use":
                out.append(self.tool(s, key, start, end))
            elif action == "user_prompt":
                continue  # the root's input
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
                if self.content and s.get("output_preview"):
                    _put(sp.attributes, [("output.value", self.text(
                        s["output_preview"], o.max_output_preview))])
            elif action in ("compaction", "permission_request"):
                out.append(self.chain(s, key, start, end))
            else:
                ev = root.events.add(time_unix_nano=start or end or self.t0,
                                     name=str(action or "event"))
                _put(ev.attributes, [("spool.step.description",
                                      self.text(s.get("description"), 200)),
                                     ("spool.step.number", A.count(s.get("number")))])
                if isinstance(s.get("error"), Mapping):
                    root_error = str(s["error"].get("type") or "Error")
        if root_error:
            ra.append(("error.type", root_error))
            root.status.code = _ERROR
            root.status.message = root_error
        _put(root.attributes, ra)
        end = self.t1
        for sp in out[1:]:  # children never outlast the root (late Post events do)
            if sp.end_time_unix_nano > end:
                end = sp.end_time_unix_nano
        root.end_time_unix_nano = end
        return out

    def chat(self, s: Mapping[str, Any], key: int, start: int, end: int, model: Any) -> Span:
        m = s.get("model") or model
        sp = self.span(key, f"chat {m}" if m else "chat", _CLIENT, start, end, A.CHAT,
                       ("gen_ai.request.model", m), ("spool.step.status", s.get("status")))
        c = A.cost(s.get("cost_usd"))  # None (unpriced): both left out
        a: list[tuple[str, Any]] = [
            ("spool.step.number", A.count(s.get("number"))), ("llm.cost.total", c),
            ("spool.cost_usd", c)]
        u = s.get("usage")
        if u.__class__ is dict or isinstance(u, Mapping):
            a += A.usage(u, reasoning_oi=True)
        self.status(sp, s, "ModelError", a)
        _put(sp.attributes, a)
        return sp

    def tool(self, s: Mapping[str, Any], key: int, start: int, end: int) -> Span:
        o = self.opts
        name = str(s.get("tool_name") or "tool")
        code = s.get("exit_code")
        sp = self.span(key, f"execute_tool {name}", _INTERNAL, start, end, A.TOOL,
                       ("gen_ai.tool.name", name), ("spool.step.status", s.get("status")),
                       ("process.exit.code", code if isinstance(code, int) else None))
        a: list[tuple[str, Any]] = [
            ("gen_ai.tool.call.id", s.get("tool_use_id")),
            ("spool.step.number", A.count(s.get("number")))]
        if self.content:
            command = self.text(s.get("command") or s.get("input_preview"), o.max_input_preview)
            if command:
                a += [("process.command_line", command), ("gen_ai.tool.call.arguments", command),
                      ("input.value", command)]
            result = self.text(s.get("output_preview"), o.max_output_preview)
            if result:  # Phoenix shows it as the span's output.value
                a.append(("gen_ai.tool.call.result", result))
        self.status(sp, s, "ToolError", a)
        _put(sp.attributes, a)
        return sp

    def subagent(self, s: Mapping[str, Any], key: int, start: int) -> Span:
        desc = str(s.get("description") or "")
        kind = desc.split(": ", 1)[1] if ": " in desc else "agent"
        sp = self.span(key, f"invoke_agent {kind}", _INTERNAL, start, start, A.AGENT)
        _put(sp.attributes, [("gen_ai.agent.name", kind), ("gen_ai.agent.id", s.get("agent_id")),
                             ("spool.step.number", A.count(s.get("number")))])
        return sp

    def chain(self, s: Mapping[str, Any], key: int, start: int, end: int) -> Span:
        action = str(s.get("action"))
        name = action if action == "compaction" else f"{action} {s.get('tool_name') or 'tool'}"
        sp = self.span(key, name, _INTERNAL, start, end, A.CHAIN)
        a: list[tuple[str, Any]] = [("spool.step.number", A.count(s.get("number"))),
                                    ("spool.step.description",
                                     self.text(s.get("description"), 200)),
                                    ("spool.step.status", s.get("status"))]
        if action == "permission_request":
            a.append(("gen_ai.tool.name", s.get("tool_name")))
            if self.content:
                a.append(("input.value", self.text(s.get("command"),
                                                   self.opts.max_input_preview)))
        self.status(sp, s, "Error", a)
        _put(sp.attributes, a)
        return sp


def spans_for(body: Mapping[str, Any], opts: Options, into: Any = None) -> list[Span]:
    """The spans of one spool trace body (root first), added to ``into`` (a repeated Span
    field, e.g. ``ScopeSpans.spans``) when given."""
    if into is None:
        into = ScopeSpans().spans
    return _Builder(body, opts, into, A.Templates()).build()


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
    templates = A.Templates()
    for opts, bodies in groups:
        rs = req.resource_spans.add(resource=resource(opts))
        ss = rs.scope_spans.add(scope=scope)
        for body in bodies:
            _Builder(body, opts, ss.spans, templates).build()
    return req
