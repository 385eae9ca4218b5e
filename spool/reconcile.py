"""Reconciling one turn against its rollout (pure): what an async hook that never
reported would have said.

spool's mid-turn hooks (Pre/PostModelRequest, Pre/PostToolUse) run ``"async":
true`` (spool.codex.hooks_json.ASYNC_EVENTS), so Codex does not wait for them;
``codex exec`` SIGKILLs those still running when it shuts down, and the last
events of a run can be lost.  Everything they carry that a trace promises is
also in the rollout, which is the ground truth: each request's token usage
(``token_usage_record``, in order per turn) and each command's exit code,
status, duration and times (``item_completed``).  ``reconcile`` fills the gaps:

* the i-th model request of the turn gets the rollout's i-th usage when its
  PostModelRequest was lost (and the rollout's usage wherever the two differ);
  requests with no hook event at all become steps of their own;
* a command with no hook event becomes a ``tool_use`` step; one whose
  PostToolUse (or PreToolUse) was lost gets its end (or start) from the rollout;
* the turn's usage is then the sum of the rollout's requests.

What cannot be recovered: a lost PostToolUse's output preview (the rollout's
output is not kept).  A turn the rollout knows nothing about is left as built.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from .trace import USAGE_KEYS, RolloutFacts, Step, StepError, add_usage, clip, empty_usage

if TYPE_CHECKING:
    from .trace_build import TurnPart

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


def reconcile(part: "TurnPart", rollout: RolloutFacts, input_preview: int = 200) -> "TurnPart":
    """``part`` with what its rollout says and its hook events did not (in place)."""
    tid = part.turn_id
    if tid is None:
        return part
    records = list(rollout.turn_requests.get(tid) or ())
    filled_models = _models(part, records, rollout.turn_models.get(tid))
    filled_tools = _tools(part, rollout, input_preview)
    if records:
        total = empty_usage()
        for r in records:
            add_usage(total, _usage(r))
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
    """Usage per model request from the rollout's records; returns how many it filled."""
    if not records:
        return 0
    models = [s for s in part.steps if s.action == "model_request"]
    filled = 0
    for i, rec in enumerate(records):
        usage = _usage(rec)
        at = rec.get("at")
        if i < len(models):
            s = models[i]
            if s.usage is None:
                filled += 1
                if s.status in (None, "no_response"):
                    s.status = "completed"
                if at is not None:
                    s.ended_at = max(at, s.started_at or at)
            if s.usage != usage:
                s.usage = usage
            continue
        s = Step("model_request", "Model request", part.turn_id, 0, at, at)
        s.model = model or part.model
        s.status = "completed"
        s.usage = usage
        _place(part.steps, s)
        filled += 1
    return filled


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
