"""A Codex session as one ATIF trajectory (Harbor's Agent Trajectory Interchange Format).

Pure: ``render(session)`` takes what spool stored about a session (the bodies
of its traces, schema ``spool.trace/1``: the latest revision of each turn and
of the session summary), and optionally the rollout's conversation
(spool.transcript) and final ``total_token_usage``, and returns an
``ATIF-v1.8`` document as a dict.  No I/O, no clock.

The mapping:

* each user prompt is a ``user`` step;
* each model request is an ``agent`` step: its usage as ``metrics``
  (``prompt_tokens`` includes cached, reasoning tokens in ``metrics.extra``),
  the tool calls that followed it as ``tool_calls`` (function name, arguments
  object, call id) and their results as ``observation.results`` tied by
  ``source_call_id``, with the exit code in the result's ``extra``; its
  message and reasoning come from the rollout's response items when known,
  and the turn's final answer goes on its last agent step;
* compactions, subagent starts/stops, interrupts and permission requests are
  ``system`` steps;
* ``final_metrics`` totals are the rollout's final ``total_token_usage`` when
  known, else the sum of the steps' usage, plus the subagents' totals;
  cost: each agent step's ``metrics.cost_usd`` is its request's (spool.cost),
  ``total_cost_usd`` their sum with the subagents' (left out when unpriced);
* each subagent (its turns: traces with an ``agent`` link) is an embedded
  trajectory in ``subagent_trajectories`` (``trajectory_id`` = its agent id),
  referred to by the spawn_agent call's ``subagent_trajectory_ref``; its steps
  are not in the root's.

ATIF rejects unknown keys: everything spool-specific lives under ``extra``.
Content follows spool's preview limits (the trace previews; rollout text
clipped to the same limits) unless ``full`` is set: then prompts, messages,
reasoning, arguments and tool outputs are complete, from the rollout.
Secrets are redacted before any text is cut, and the whole document once more
at the end.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

from . import __version__
from . import atif_metrics as metrics
from . import atif_subagents as subagents_mod
from .redact import redact, redact_text
from .trace import INPUT_SUMMARY_MAX, OUTPUT_SUMMARY_MAX, Limits, clip
from .transcript import Response, Transcript, Turn

SCHEMA_VERSION = "ATIF-v1.8"
AGENT_NAME = "codex"
SYSTEM_ACTIONS = ("compaction", "subagent_start", "subagent_stop", "interrupt",
                  "permission_request", "event")


@dataclass
class Session:
    """Everything ``render`` needs about one session."""

    session_id: str
    bodies: Sequence[Mapping[str, Any]]  # traces.body of the session's latest traces
    transcript: Transcript | None = None
    rollout_total: Mapping[str, int] | None = None  # spool usage keys (trace.USAGE_KEYS)
    still_open: bool = False
    full: bool = False
    limits: Limits = field(default_factory=Limits)


def timestamp(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


# --- which steps of which trace ---------------------------------------------------


@dataclass
class _TurnSource:
    turn_id: str | None
    steps: list[Mapping]
    prompt: str | None = None  # the whole prompt (input_summary) when the turn had one
    final: str | None = None  # the turn's last assistant message (output_summary)
    incomplete: bool = False


def _turns(bodies: Sequence[Mapping]) -> list[_TurnSource]:
    """The session's turns in order, each from the trace that knows most of it.

    A turn trace and the session summary both hold a turn's steps; the summary
    may hold more (events that came after the turn was traced), a turn trace
    holds the turn's whole prompt and final answer.
    """
    by_turn: dict[str | None, _TurnSource] = {}
    for b in bodies:
        if b.get("kind") != "session":
            continue
        for s in b.get("steps") or []:
            if s.get("action") in ("session_start", "session_end"):
                continue
            tid = s.get("turn_id")
            src = by_turn.setdefault(tid, _TurnSource(tid, []))
            src.steps.append(s)
        for t in b.get("turns") or []:
            if t.get("turn_id") in by_turn and not t.get("complete", True):
                by_turn[t["turn_id"]].incomplete = True
    for b in bodies:
        if b.get("kind") != "turn":
            continue
        tid = b.get("turn_id")
        steps = list(b.get("steps") or [])
        prompts = [s for s in steps if s.get("action") == "user_prompt"]
        known = by_turn.get(tid)
        src = _TurnSource(tid, steps, b.get("input_summary") if len(prompts) == 1 else None,
                          b.get("output_summary") or None, bool(b.get("incomplete")))
        if known is not None and len(known.steps) > len(steps):
            known.prompt, known.final = src.prompt, src.final
            known.incomplete = known.incomplete and src.incomplete
            continue
        by_turn[tid] = src
    out = [t for t in by_turn.values() if t.steps]
    out.sort(key=lambda t: min((s.get("started_at") or 0.0) for s in t.steps))
    return out


# --- text ---------------------------------------------------------------------------


class _Text:
    def __init__(self, full: bool, limits: Limits) -> None:
        self.full = full
        self.limits = limits

    def cut(self, text: Any, limit: int) -> str:
        """Redacted, then clipped to ``limit`` unless the export is full."""
        if text is None:
            return ""
        s = text if isinstance(text, str) else clip(text, 10 ** 9)
        return redact_text(s) if self.full else clip(s, limit, redact=True)

    def arguments(self, args: Any) -> dict:
        if not isinstance(args, dict):
            args = {"input": args} if args not in (None, "") else {}
        out = {}
        for k, v in args.items():
            out[k] = self.cut(v, self.limits.max_input_preview) if isinstance(v, str) else redact(v)
        return out


# --- the document --------------------------------------------------------------------


def _drop_none(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


def _match_responses(agent_steps: list[dict], turn: Turn | None) -> list[Response | None]:
    """The rollout response of each agent step of one turn (None: unknown)."""
    if turn is None or not turn.responses:
        return [None] * len(agent_steps)
    responses = turn.responses
    if len(responses) == len(agent_steps):
        return list(responses)
    out: list[Response | None] = []
    by_call = {c.call_id: r for r in responses for c in r.calls}
    for st in agent_steps:
        ids = [tc["tool_call_id"] for tc in st.get("tool_calls") or []]
        out.append(next((by_call[i] for i in ids if i in by_call), None))
    if agent_steps and out[-1] is None and not responses[-1].calls:
        out[-1] = responses[-1]
    return out


def _call_owners(turn: Turn | None, steps: Sequence[Mapping]) -> dict[str, int]:
    """Tool call id -> the index of the model request (among the turn's) that made it, from
    the rollout's responses when they pair one to one with the turn's model requests.
    Async hooks arrive in any order, so a tool call's step can come before its request's."""
    n = sum(1 for st in steps if st.get("action") == "model_request")
    if turn is None or not turn.responses or len(turn.responses) != n:
        return {}
    return {c.call_id: i for i, r in enumerate(turn.responses) for c in r.calls}


class _Builder:
    def __init__(self, session: Session) -> None:
        self.s = session
        self.text = _Text(session.full, session.limits)
        self.steps: list[dict] = []
        self.notes: list[str] = []
        self._calls: dict | None = None  # call id -> transcript.Call, built on first use

    def add(self, step: dict) -> dict:
        out = {"step_id": len(self.steps) + 1, **step}
        self.steps.append(out)
        return out

    def turn(self, src: _TurnSource) -> None:
        s, text = self.s, self.text
        conv = s.transcript.turn(src.turn_id) if s.transcript else None
        prompts = list(conv.prompts) if conv else []
        agent_steps: list[dict] = []
        requests: list[dict] = []  # the agent step of each model request, in order
        owner = _call_owners(conv, src.steps)
        late: list[tuple[int, Mapping]] = []  # tool calls seen before their request's step
        current: dict | None = None
        for st in src.steps:
            action = st.get("action")
            when = timestamp(st.get("started_at"))
            if action == "user_prompt":
                full_prompt = prompts.pop(0) if prompts else None
                if full_prompt is not None:
                    msg = text.cut(full_prompt, INPUT_SUMMARY_MAX)
                elif src.prompt is not None:
                    msg = text.cut(src.prompt, INPUT_SUMMARY_MAX)
                else:
                    msg = text.cut(st.get("input_preview"), INPUT_SUMMARY_MAX)
                self.add(_drop_none({"timestamp": when, "source": "user", "message": msg,
                                     "extra": {"turn_id": src.turn_id}}))
                current = None
            elif action == "model_request":
                current = self.add(_drop_none({
                    "timestamp": when, "source": "agent", "model_name": st.get("model"),
                    "message": "", "llm_call_count": 1,
                    "metrics": metrics.step(st.get("usage"), st.get("cost_usd")),
                    "extra": _drop_none({"turn_id": src.turn_id, "status": st.get("status"),
                                         "duration_ms": st.get("duration_ms"),
                                         "error": st.get("error")})}))
                agent_steps.append(current)
                requests.append(current)
            elif action == "tool_use":
                k = owner.get(st.get("tool_use_id"))
                if k is not None:  # the request that made the call, whatever the hooks' order
                    if k < len(requests):
                        self.tool(requests[k], st)
                    else:
                        late.append((k, st))
                    continue
                if current is None:  # a tool call no model request announced
                    current = self.add({"timestamp": when, "source": "agent", "message": "",
                                        "llm_call_count": 0,
                                        "extra": {"turn_id": src.turn_id,
                                                  "note": "tool call without a model request"}})
                    agent_steps.append(current)
                self.tool(current, st)
            elif action in SYSTEM_ACTIONS:
                self.add(_drop_none({"timestamp": when, "source": "system",
                                     "message": text.cut(st.get("description"), 1000),
                                     "extra": _drop_none({
                                         "turn_id": src.turn_id, "action": action,
                                         "tool_name": st.get("tool_name"),
                                         "agent_id": st.get("agent_id"),
                                         "output": st.get("output_preview"),
                                         "error": st.get("error")})}))
        for k, st in late:
            self.tool(requests[k], st)
        self.conversation(agent_steps, conv, src)
        if src.incomplete:
            self.notes.append(f"turn {src.turn_id}: incomplete (no Stop received)")

    def tool(self, agent: dict, st: Mapping) -> None:
        text, limits = self.text, self.s.limits
        call_id = st.get("tool_use_id") or f"spool-step-{st.get('number')}"
        cmd = text.cut(st.get("command"), limits.max_input_preview) if st.get("command") else None
        call = self._call(call_id)
        if call is not None:
            name, args = call.name, text.arguments(call.arguments)
        else:
            name, args = st.get("tool_name") or "tool", ({"command": cmd} if cmd else {})
        agent.setdefault("tool_calls", []).append({
            "tool_call_id": call_id, "function_name": name, "arguments": args,
            "extra": _drop_none({"tool_name": st.get("tool_name"), "command": cmd})})
        full = self.s.transcript.outputs.get(call_id) if (
            self.s.full and self.s.transcript) else None
        content = text.cut(full, limits.max_output_preview) if full is not None else (
            st.get("output_preview") or "")
        result = {
            "source_call_id": call_id, "content": content,
            "extra": {"exit_code": st.get("exit_code"), **_drop_none({
                "status": st.get("status"), "exec_duration_ms": st.get("exec_duration_ms"),
                "duration_ms": st.get("duration_ms"), "error": st.get("error")})}}
        if st.get("agent_id") and str(st.get("tool_name") or "").endswith("spawn_agent"):
            result["subagent_trajectory_ref"] = [{"trajectory_id": st["agent_id"],
                                                  "session_id": self.s.session_id}]
        agent.setdefault("observation", {"results": []})["results"].append(result)

    def _call(self, call_id: str):
        if self._calls is None:
            t = self.s.transcript
            self._calls = {} if t is None else {
                c.call_id: c for turn in t.turns.values() for r in turn.responses for c in r.calls}
        return self._calls.get(call_id)

    def conversation(self, agent_steps: list[dict], conv: Turn | None, src: _TurnSource) -> None:
        """Messages and reasoning on the turn's agent steps; the final answer on the last."""
        text = self.text
        for st, resp in zip(agent_steps, _match_responses(agent_steps, conv)):
            if resp is None:
                continue
            if resp.message:
                st["message"] = text.cut(resp.message, OUTPUT_SUMMARY_MAX)
            if resp.reasoning_text and st.get("llm_call_count") != 0:
                st["reasoning_content"] = text.cut(resp.reasoning_text, OUTPUT_SUMMARY_MAX)
        if agent_steps and not agent_steps[-1]["message"] and src.final:
            agent_steps[-1]["message"] = text.cut(src.final, OUTPUT_SUMMARY_MAX)

def render(session: Session) -> dict:
    """The ATIF document of ``session`` (a JSON-ready dict)."""
    b = _Builder(session)
    child_of = subagents_mod.child_turns(session.bodies)
    all_turns = _turns(session.bodies)
    turns = [t for t in all_turns if t.turn_id not in child_of]
    for src in turns:
        b.turn(src)
    children = _subagents(session, [t for t in all_turns if t.turn_id in child_of], child_of)
    env: dict = {}
    project = None
    for body in sorted(session.bodies, key=lambda x: x.get("ended_at") or 0.0):
        env.update({k: v for k, v in (body.get("environment") or {}).items() if v})
        project = body.get("project") or project
    if not b.steps:
        b.add({"source": "system", "message": "spool has no steps of this session yet"})
    notes = []
    if session.still_open:
        notes.append("session still open: this trajectory holds what spool has traced so far "
                     f"({len(turns)} turn(s)); export again when the session has ended")
    notes.extend(b.notes)
    notes.append("content complete, from the rollout (--full)" if session.full else
                 "content clipped to spool's preview limits (tool output "
                 f"{session.limits.max_output_preview} chars); `spool export --full` for "
                 "complete outputs")
    if session.rollout_total is None:
        notes.append("final_metrics summed from the steps (no rollout total_token_usage)")
    doc = {
        "schema_version": SCHEMA_VERSION,
        "session_id": session.session_id,
        "agent": _drop_none({"name": AGENT_NAME, "version": env.get("codex_version") or "unknown",
                             "model_name": env.get("model"),
                             "extra": {"producer": f"spool {__version__}"}}),
        "steps": b.steps,
        "notes": "; ".join(notes),
        "final_metrics": metrics.final(b.steps, session.rollout_total, children),
        "extra": {"spool": _drop_none({
            "project": project, "cwd": env.get("cwd"),
            "permission_mode": env.get("permission_mode"),
            "session_source": env.get("session_source"), "git_branch": env.get("git_branch"),
            "git_commit": env.get("git_commit"), "run_id": env.get("run_id"),
            "still_open": session.still_open,
            "content": "full" if session.full else "preview",
            "traces": [{"trace_id": x.get("trace_id"), "kind": x.get("kind"),
                        "turn_id": x.get("turn_id"), "revision": x.get("revision")}
                       for x in session.bodies]})},
    }
    if children:
        doc["subagent_trajectories"] = children
    return redact(doc)


def _subagents(session: Session, turns: list[_TurnSource],
               child_of: Mapping[str, Mapping]) -> list[dict]:
    """One embedded trajectory per subagent (``trajectory_id`` = its agent id, which
    the spawn call's ``subagent_trajectory_ref`` names), all in the root's array."""
    by_agent: dict[str, list[_TurnSource]] = {}
    for t in turns:
        by_agent.setdefault(str(child_of[t.turn_id].get("agent_id")), []).append(t)
    version = subagents_mod.codex_version(session.bodies)
    out = []
    for agent_id, agent_turns in by_agent.items():
        b = _Builder(session)
        for src in agent_turns:
            b.turn(src)
        agent, extra = subagents_mod.describe(child_of[agent_turns[0].turn_id], agent_id,
                                              version, [t.turn_id for t in agent_turns])
        out.append({
            "schema_version": SCHEMA_VERSION, "session_id": session.session_id,
            "trajectory_id": agent_id, "agent": agent,
            "steps": b.steps or [{"step_id": 1, "source": "system",
                                  "message": "spool has no steps of this subagent yet"}],
            "final_metrics": metrics.final(b.steps, None), "extra": extra})
    return out
