"""One turn trace body as a waterfall: every step a row on a shared time axis (pure).

Rows are ``<details>``: the summary is the label, the bar (offset and width from the
step's start and duration) and the duration/tokens/exit code; opening a row shows the
previews.  A failed step (an error, a non-zero exit code, a failed status) is marked
``failed`` (red).  Data attributes (``data-action``, ``data-failed``) let tests count rows.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..timeline import to_epoch
from .html import duration, esc, num

_FAILED_STATUS = {"failed", "error", "errored", "declined", "timeout", "timed_out"}


def failed(step: Mapping[str, Any]) -> bool:
    """An error, a non-zero exit code or a failed status."""
    code = step.get("exit_code")
    return (bool(step.get("error")) or (isinstance(code, int) and code != 0)
            or str(step.get("status") or "").lower() in _FAILED_STATUS)


def _tokens(usage: Any) -> str:
    if not isinstance(usage, Mapping):
        return ""
    parts = [f"{num(usage.get(k))} {short}" for k, short in
             (("input", "in"), ("cached", "cached"), ("output", "out")) if usage.get(k)]
    return " · ".join(parts)


def _label(step: Mapping[str, Any]) -> str:
    action = step.get("action") or "step"
    if action == "tool_use":
        text = step.get("command") or step.get("tool_name") or step.get("description")
        head = step.get("tool_name") or "tool"
    elif action == "model_request":
        head, text = "model", step.get("model") or step.get("description")
    else:
        head, text = action.replace("_", " "), step.get("description")
    agent = step.get("agent_id")
    sub = f'<span class="muted">[{esc(agent)}]</span> ' if agent else ""
    return f"{sub}<b>{esc(head)}</b> {esc(text)}"


def _meta(step: Mapping[str, Any]) -> str:
    parts = [duration(step.get("duration_ms"))]
    if step.get("action") == "model_request":
        parts.append(_tokens(step.get("usage")))
    if step.get("exit_code") is not None:
        parts.append(f"exit {esc(step.get('exit_code'))}")
    return " · ".join(p for p in parts if p)


def _details(step: Mapping[str, Any]) -> str:
    rows = []
    for key, name in (("command", "command"), ("input_preview", "input"),
                      ("output_preview", "output")):
        if step.get(key) and not (key == "input_preview" and step[key] == step.get("command")):
            rows.append(f"<div><b>{name}</b><pre>{esc(step[key])}</pre></div>")
    err = step.get("error")
    if isinstance(err, Mapping):
        rows.append(f'<div class="err">{esc(err.get("type"))}: {esc(err.get("message"))}</div>')
    facts = [f"{k}: {esc(step[k])}" for k in ("status", "exit_code", "exec_duration_ms", "model",
                                               "tool_use_id", "agent_id")
             if step.get(k) is not None]
    usage = step.get("usage")
    if isinstance(usage, Mapping):
        facts.append("tokens: " + esc(", ".join(f"{k} {v}" for k, v in usage.items())))
    if facts:
        rows.append(f'<div class="muted mono">{" · ".join(facts)}</div>')
    return "".join(rows) or '<div class="muted">no preview</div>'


def bounds(steps: Sequence[Mapping[str, Any]], body: Mapping[str, Any]) -> tuple[float, float]:
    """(t0, span seconds) covering the turn and every step."""
    starts = [t for t in (to_epoch(s.get("started_at")) for s in steps) if t is not None]
    ends = [t for t in (to_epoch(s.get("ended_at")) for s in steps) if t is not None]
    t0 = min(starts + [t for t in [to_epoch(body.get("started_at"))] if t is not None], default=0.0)
    t1 = max(ends + starts + [t for t in [to_epoch(body.get("ended_at"))] if t is not None],
             default=t0)
    return t0, max(t1 - t0, 0.001)


def waterfall(body: Mapping[str, Any]) -> str:
    """The timeline of one trace body (turn or session summary)."""
    steps = [s for s in body.get("steps") or [] if isinstance(s, Mapping)]
    if not steps:
        return '<p class="muted">This trace has no steps.</p>'
    t0, span = bounds(steps, body)
    rows = []
    for s in steps:
        start = to_epoch(s.get("started_at"))
        end = to_epoch(s.get("ended_at"))
        left = 0.0 if start is None else (start - t0) / span * 100
        width = 0.0 if start is None or end is None else (end - start) / span * 100
        action = str(s.get("action") or "step")
        bad = failed(s)
        cls = f"{esc(action)}{' failed' if bad else ''}"
        rows.append(
            f'<details class="{cls}" data-action="{esc(action)}" data-failed="{int(bad)}">'
            f'<summary><span class="lbl">{_label(s)}</span>'
            f'<span class="axis"><span class="bar" style="left:{left:.2f}%;'
            f'width:{max(width, 0.3):.2f}%"></span></span>'
            f'<span class="meta">{_meta(s)}</span></summary>'
            f'<div class="body">{_details(s)}</div></details>')
    legend = ('<p class="legend"><span><i style="background:#3b7ddd"></i>model request</span>'
              '<span><i style="background:#2e9b57"></i>tool call</span>'
              '<span><i style="background:#a77bd8"></i>prompt</span>'
              '<span><i style="background:#d93025"></i>failed</span>'
              f'<span class="muted">axis: {esc(duration(span * 1000))}</span>'
              '<button type=button onclick="spoolToggle(true)">expand all</button> '
              '<button type=button onclick="spoolToggle(false)">collapse all</button></p>')
    return f'{legend}<div class="tl">{"".join(rows)}</div>'
