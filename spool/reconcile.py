"""Reconciling one turn against its rollout (pure): what an async hook that never
reported would have said.

spool's mid-turn hooks (Pre/PostModelRequest, Pre/PostToolUse) run ``"async":
true`` (spool.codex.hooks_json.ASYNC_EVENTS), so Codex does not wait for them;
``codex exec`` SIGKILLs those still running when it shuts down, and the last
events of a run can be lost.  Everything they carry that a trace promises is
also in the rollout, which is the ground truth: each request's token usage
(``token_usage_record``, in order per turn) and each command's exit code,
status, duration and times (``item_completed``).  ``reconcile`` fills the gaps:

* the turn's model requests become the rollout's, one step per request with
  its usage (``_models``): a lost PostModelRequest is filled, a request with no
  hook event at all becomes a step of its own;
* async hooks finish in any order: a Post that arrived before its Pre makes no
  double step (``_models``, ``_dedupe_tools``);
* a command with no hook event becomes a ``tool_use`` step; one whose
  PostToolUse (or PreToolUse) was lost gets its end (or start) from the rollout;
* the turn's usage is then the sum of its requests' usage.

What cannot be recovered: a lost PostToolUse's output preview (the rollout's
output is not kept).  A turn the rollout knows nothing about is left as built.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

from .trace import (USAGE_KEYS, Event, RolloutFacts, Step, StepError, add_usage, clip,
                    empty_usage)

if TYPE_CHECKING:
    from .turn_part import TurnPart

# The hook's tool_name for a shell command (Codex 0.169: exec_command -> "Bash").
COMMAND_TOOL = "Bash"


def _usage(record: Mapping[str, Any]) -> dict[str, int]:
    return {k: int(record.get(k, 0) or 0) for k in USAGE_KEYS}


def _place(steps: list[Step], step: Step) -> None:
    """Insert ``step`` before the first step that started after it (else at the end)."""
    t = step.started_at
    if t is not None:
        for i, s in enumerate(steps):
            if s.started_at is not None and s.started_at > t:
                steps.insert(i, step)
                return
    steps.append(step)


def _tool_id(e: Event) -> str | None:
    v = e.payload.get("tool_use_id")
    return v if isinstance(v, str) and v else None


_MODEL_EVENTS = frozenset(("PreModelRequest", "PostModelRequest"))


def settle_order(events: Sequence[Event]) -> list[Event]:
    """A turn's events with each async Pre before its Post (pure).

    Async hooks finish in any order, so a PostToolUse or PostModelRequest can
    arrive before its Pre.  A PreToolUse after its PostToolUse (same
    tool_use_id) moves to just before it; a PostModelRequest with no request
    open, directly followed (among model events) by a PreModelRequest, swaps
    with it (a turn's model requests are sequential).  Anything else keeps its
    arrival order.
    """
    evs = list(events)
    first_post: dict[str, int] = {}
    before: dict[int, list[Event]] = {}
    late_pre: set[int] = set()
    for i, e in enumerate(evs):  # one pass: a Pre can only be late after its Post
        name = e.event
        if name == "PostToolUse":
            tid = _tool_id(e)
            if tid and tid not in first_post:
                first_post[tid] = i
        elif name == "PreToolUse" and first_post:
            j = first_post.get(_tool_id(e) or "")
            if j is not None:
                before.setdefault(j, []).append(e)
                late_pre.add(i)
    if late_pre:
        moved: list[Event] = []
        for k, e in enumerate(evs):
            moved.extend(before.get(k, ()))
            if k not in late_pre:
                moved.append(e)
        evs = moved
    model_idx = [i for i, e in enumerate(evs) if e.event in _MODEL_EVENTS]
    open_requests = 0
    k = 0
    while k < len(model_idx):
        i = model_idx[k]
        if evs[i].event == "PreModelRequest":
            open_requests += 1
        elif open_requests:
            open_requests -= 1
        elif k + 1 < len(model_idx) and evs[model_idx[k + 1]].event == "PreModelRequest":
            j = model_idx[k + 1]
            evs[i], evs[j] = evs[j], evs[i]  # Pre, then its Post: the pair is closed
            k += 2
            continue
        k += 1
    return evs


def reconcile(part: "TurnPart", rollout: RolloutFacts, input_preview: int = 200) -> "TurnPart":
    """``part`` with what its rollout says and its hook events did not (in place)."""
    tid = part.turn_id
    if tid is None:
        return part
    records = list(rollout.turn_requests.get(tid) or ())
    filled_models = _models(part, records, rollout.turn_models.get(tid))
    _dedupe_tools(part)
    filled_tools = _tools(part, rollout, input_preview)
    if records:
        # every request's usage once: the rollout's, plus any hook-reported request the
        # rollout has not written yet (it can lag behind the Stop hook)
        total = empty_usage()
        for s in part.steps:
            if s.action == "model_request" and s.usage is not None:
                add_usage(total, s.usage)
        if total != part.usage:
            part.usage = total
            if part.usage_source == "none":
                part.usage_source = "rollout"
    if filled_models or filled_tools:
        part.notes.append(
            f"{filled_models} model request(s) and {filled_tools} tool call(s) completed from "
            "the rollout (their async hook events did not arrive)")
    return part


def _models(part: "TurnPart", records: list, model: str | None) -> int:
    """The turn's model requests as the rollout has them; returns how many it filled.

    When the hooks' requests already match the rollout's one by one (count and
    usage), nothing changes.  Otherwise (a lost PostModelRequest, or async hooks
    that arrived out of order, a Post before its Pre) each rollout request takes
    the hook step with the same usage, else the next step whose Post never came,
    else a new step; hook steps left over without usage or error are the
    out-of-order doubles and go.  A failed request (an error, no usage) stays.
    """
    if not records:
        return 0
    models = [s for s in part.steps if s.action == "model_request"]
    usages = [_usage(r) for r in records]
    if len(models) == len(records) and all(s.usage == u for s, u in zip(models, usages)):
        return 0
    used: set[int] = set()
    chosen: list[Step | None] = []
    for u in usages:  # the step whose PostModelRequest said exactly this
        s = next((s for s in models if id(s) not in used and s.usage == u), None)
        if s is not None:
            used.add(id(s))
        chosen.append(s)
    waiting = sorted((s for s in models if id(s) not in used and s.usage is None
                      and s.error is None), key=lambda s: s.started_at or 0.0)
    filled = 0
    for i, (rec, u) in enumerate(zip(records, usages)):
        if chosen[i] is not None:
            continue
        at = rec.get("at")
        filled += 1
        if waiting:  # its Pre arrived, its Post did not
            s = waiting.pop(0)
            used.add(id(s))
            s.usage = u
            s.status = "completed"
            if at is not None:
                s.ended_at = max(at, s.started_at or at)
            continue
        s = Step("model_request", "Model request", part.turn_id, 0, at, at)
        s.model = model or part.model
        s.status = "completed"
        s.usage = u
        used.add(id(s))
        _place(part.steps, s)
    part.steps[:] = [s for s in part.steps if s.action != "model_request" or id(s) in used
                     or s.error is not None or s.usage is not None]
    return filled


def _dedupe_tools(part: "TurnPart") -> None:
    """One step per tool call: a PreToolUse that arrived after its PostToolUse (async
    hooks finish in any order) made a second step; keep the one with the output."""
    by_id: dict[str, list[Step]] = {}
    for s in part.steps:
        if s.action == "tool_use" and s.tool_use_id:
            by_id.setdefault(s.tool_use_id, []).append(s)
    for cid, group in by_id.items():
        if len(group) < 2:
            continue
        keep = next((s for s in group if s.output_preview is not None), group[0])
        starts = [s.started_at for s in group if s.started_at is not None]
        if starts:
            keep.started_at = min(starts)
        if keep.status == "no_result":
            keep.status = "completed"
        part.steps[:] = [s for s in part.steps if s is keep or s not in group]
        for note in (f"tool call {cid}: no PostToolUse received",
                     f"tool call {cid}: PostToolUse without PreToolUse"):
            while note in part.notes:
                part.notes.remove(note)


def _tools(part: "TurnPart", rollout: RolloutFacts, li: int) -> int:
    """Tool calls from the rollout's commands of this turn; returns how many it filled."""
    by_id = {s.tool_use_id: s for s in part.steps if s.action == "tool_use" and s.tool_use_id}
    filled = 0
    for cid, cf in rollout.commands.items():
        if cf.turn_id != part.turn_id:
            continue
        s = by_id.get(cid)
        if s is not None:
            lost_post = f"tool call {cid}: no PostToolUse received"
            lost_pre = f"tool call {cid}: PostToolUse without PreToolUse"
            if lost_post in part.notes:
                part.notes.remove(lost_post)
                if cf.ended_at is not None:
                    s.ended_at = cf.ended_at
                filled += 1
            if lost_pre in part.notes:
                part.notes.remove(lost_pre)
                if cf.started_at is not None:
                    s.started_at = cf.started_at
                filled += 1
            continue
        if cf.source and "user" in cf.source:
            continue  # a shell command the user ran (no tool hook ever fires for it)
        s = Step("tool_use", cf.command or COMMAND_TOOL, part.turn_id, 0, cf.started_at,
                 cf.ended_at)
        s.tool_name = COMMAND_TOOL
        s.tool_use_id = cid
        s.command = cf.command
        if cf.command is not None:
            s.input_preview = clip(cf.command, li)
        s.exit_code = cf.exit_code
        s.status = cf.status or "completed"
        s.exec_duration_ms = cf.duration_ms
        failed = (cf.exit_code not in (None, 0)) or (cf.status in ("failed", "declined"))
        if failed:
            code = "unknown" if cf.exit_code is None else str(cf.exit_code)
            s.error = StepError("ToolError", clip(
                f"command exited with code {code} ({cf.status or 'failed'}): "
                f"{cf.command or COMMAND_TOOL}", 1000))
        _place(part.steps, s)
        filled += 1
    return filled
