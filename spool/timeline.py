"""A trace body (the JSON in ``traces.body``) as a readable timeline, for `spool show`.

Pure functions, no I/O.  The renderer is tolerant: it reads the neutral trace
model's usual keys (``steps``, ``errors``, ``usage``, times as epoch seconds or
ISO strings, durations in ms) and falls back to close synonyms, so a body
shape it does not know still prints something useful rather than failing.
Secrets are redacted before any text is cut to the terminal width (spool.redact).
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

from .redact import cut, redact

_STEP_KIND = ("kind", "type", "action", "event", "source", "role")
_STEP_LABEL = ("description", "command", "tool_name", "tool", "name", "title", "message",
               "text", "input_preview", "input", "prompt")
_STEP_OUTPUT = ("output_preview", "output", "result", "response")
_START = ("started_at", "start", "start_time", "timestamp", "at", "opened_at")
_END = ("ended_at", "end", "end_time", "closed_at")
# (key, short name); the neutral model (spool/trace.py) uses input/cached/output/
# reasoning/total inside a "usage" dict, OpenAI-style names are accepted too.
_USAGE_SHORT = (("input", "in"), ("cached", "cached"), ("output", "out"),
                ("reasoning", "reasoning"), ("total", "total"))
_TOKEN_KEYS = (("input_tokens", "in"), ("prompt_tokens", "in"), ("output_tokens", "out"),
               ("completion_tokens", "out"), ("cached_input_tokens", "cached"),
               ("cached_tokens", "cached"), ("reasoning_output_tokens", "reasoning"),
               ("reasoning_tokens", "reasoning"), ("total_tokens", "total"))


def _first(d: Mapping[str, Any], keys: Sequence[str]) -> Any:
    for k in keys:
        v = d.get(k)
        if v not in (None, "", [], {}):
            return v
    return None


def to_epoch(value: Any) -> float | None:
    """Epoch seconds from a number (s or ms) or an ISO 8601 string."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value) / 1000.0 if value > 1e11 else float(value)
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        return dt.timestamp()
    return None


def fmt_duration(ms: float | None) -> str:
    if ms is None:
        return ""
    if ms < 1000:
        return f"{ms:.0f}ms"
    s = ms / 1000.0
    if s < 60:
        return f"{s:.2f}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{int(m)}m{s:04.1f}s"
    h, m = divmod(m, 60)
    return f"{int(h)}h{int(m):02d}m"


def fmt_time(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def tokens_of(d: Mapping[str, Any]) -> dict[str, int]:
    """{in, out, cached, reasoning, total} found in ``d`` or its usage/metrics/tokens dict."""
    out: dict[str, int] = {}
    sources = [d] + [d[k] for k in ("usage", "tokens", "metrics", "token_usage", "llm_usage")
                     if isinstance(d.get(k), Mapping)]
    for src in sources:
        keys = _TOKEN_KEYS if src is d else _TOKEN_KEYS + _USAGE_SHORT
        for key, short in keys:
            v = src.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and short not in out:
                out[short] = int(v)
    if isinstance(d.get("tokens"), (int, float)) and "total" not in out:
        out["total"] = int(d["tokens"])
    return out


def fmt_tokens(t: Mapping[str, int]) -> str:
    parts = [f"{k} {t[k]:,}" for k in ("in", "cached", "out", "reasoning", "total") if k in t]
    return ", ".join(parts)


def _short(value: Any, n: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        import json

        value = json.dumps(value, ensure_ascii=False, default=str)
    return cut(" ".join(value.split()), n, mark="…")


def _fit(line: str, width: int, red: bool = True) -> str:
    return cut(line, width, redact=red, mark="")


def _error_text(err: Any) -> str:
    if not err:
        return ""
    if isinstance(err, Mapping):
        kind = _first(err, ("error_type", "type", "class", "kind")) or "error"
        msg = _first(err, ("message", "detail", "text")) or ""
        where = f"step {err['step_number']}: " if err.get("step_number") else ""
        return f"{where}{kind}: {msg}".rstrip(": ")
    return str(err)


_NO_COST = object()  # a step without a cost_usd key (not a model request, or an old body)


def fmt_usd(v: Any) -> str:
    """A cost in USD; None (no price known) reads "no price"."""
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return "no price"
    return f"${v:,.2f}" if v >= 1 else f"${v:.4f}"


def step_rows(body: Mapping[str, Any]) -> list[dict]:
    """One dict per step: n, offset_ms (from trace start), kind, label, output,
    duration_ms, tokens (dict), error (str)."""
    steps = body.get("steps") or body.get("events") or []
    if not isinstance(steps, list):
        return []
    t0 = to_epoch(_first(body, _START))
    rows = []
    for i, step in enumerate(steps, 1):
        if not isinstance(step, Mapping):
            rows.append({"n": i, "offset_ms": None, "kind": "", "label": _short(step, 80),
                         "output": "", "duration_ms": None, "tokens": {}, "cost": _NO_COST,
                         "error": ""})
            continue
        start = to_epoch(_first(step, _START))
        end = to_epoch(_first(step, _END))
        if t0 is None and start is not None:
            t0 = start
        dur = step.get("duration_ms")
        if not isinstance(dur, (int, float)) or isinstance(dur, bool):
            dur = (end - start) * 1000.0 if start is not None and end is not None else None
        rows.append({
            "n": step.get("number") or step.get("step_number") or step.get("step_id") or i,
            "offset_ms": (start - t0) * 1000.0 if start is not None and t0 is not None else None,
            "kind": str(_first(step, _STEP_KIND) or ""),
            "label": _short(_first(step, _STEP_LABEL), 80),
            "output": _short(_first(step, _STEP_OUTPUT), 80),
            "duration_ms": dur,
            "tokens": tokens_of(step),
            "cost": step.get("cost_usd", _NO_COST),
            "error": _error_text(step.get("error") or step.get("errors")),
            "exit_code": step.get("exit_code") if isinstance(step.get("exit_code"), int) else None,
        })
    return rows


def summary(body: Mapping[str, Any]) -> dict:
    """Header facts: name, kind, started/ended (epoch), duration_ms, tokens, errors."""
    start = to_epoch(_first(body, _START))
    end = to_epoch(_first(body, _END))
    dur = body.get("duration_ms")
    if not isinstance(dur, (int, float)) or isinstance(dur, bool):
        dur = (end - start) * 1000.0 if start is not None and end is not None else None
    errs = body.get("errors") or []
    if not isinstance(errs, list):
        errs = [errs]
    env = body.get("environment") if isinstance(body.get("environment"), Mapping) else {}
    answer = _first(body, ("final_answer", "output_summary", "last_assistant_message"))
    return {
        "name": body.get("name") or "",
        "kind": body.get("kind") or "",
        "model": body.get("model") or env.get("model") or "",
        "cwd": body.get("cwd") or env.get("cwd") or "",
        "branch": body.get("git_branch") or env.get("git_branch") or "",
        "final_answer": answer if isinstance(answer, str) else "",
        "started_at": start,
        "ended_at": end,
        "duration_ms": dur,
        "tokens": tokens_of(body),
        "errors": [_error_text(e) for e in errs],
    }


def _depths(body: Mapping[str, Any]) -> dict[Any, int]:
    """A session summary's subagent turns -> their depth (its ``turns`` lines)."""
    out = {}
    for t in body.get("turns") or ():
        if isinstance(t, Mapping) and t.get("agent_id"):
            out[t.get("turn_id")] = int(t.get("depth") or 1)
    return out


def render(body: Mapping[str, Any], width: int = 100, *, redact_secrets: bool = True) -> str:
    """The whole trace as plain text lines (rich-free, so tests can read it); secrets
    redacted (the whole body first, then each cut) unless ``redact_secrets`` is off."""
    if redact_secrets:
        body = redact(body)
    red = redact_secrets
    s = summary(body)
    lines = [f"{s['name'] or '(unnamed trace)'}  [{s['kind'] or '?'}]"]
    facts = [f"started {fmt_time(s['started_at'])}"]
    if s["duration_ms"] is not None:
        facts.append(f"duration {fmt_duration(s['duration_ms'])}")
    if s["model"]:
        facts.append(f"model {s['model']}")
    if s["tokens"]:
        facts.append(f"tokens {fmt_tokens(s['tokens'])}")
    if "cost_usd" in body:
        facts.append(f"cost {fmt_usd(body.get('cost_usd'))}")
    lines.append("  " + " · ".join(facts))
    for flag in body.get("cost_flags") or ():
        lines.append(f"  cost: {flag}")
    agent = body.get("agent") if isinstance(body.get("agent"), Mapping) else None
    if agent is not None:
        lines.append(f"  subagent {agent.get('nickname') or agent.get('agent_id')} "
                     f"({agent.get('agent_type') or 'agent'}, depth {agent.get('depth') or 1})"
                     + (f" of trace {agent['parent_trace_id']}, spawned at step "
                        f"{agent.get('spawn_step')}" if agent.get("parent_trace_id") else ""))
    if s["cwd"] or s["branch"]:
        where = s["cwd"] or "?"
        lines.append(f"  in {where}" + (f" (branch {s['branch']})" if s["branch"] else ""))
    rows = step_rows(body)
    lines.append(f"  {len(rows)} step(s)")
    # Subagents' steps are indented by their depth (a session summary holds them
    # all); a parent turn's spawn step is followed by a line naming the child's trace.
    depth = _depths(body)
    base = int(agent.get("depth") or 1) if agent is not None else 0
    spawned: dict[Any, list[Mapping]] = {}
    for x in body.get("subagents") or ():
        if isinstance(x, Mapping):
            spawned.setdefault(x.get("spawn_step"), []).append(x)
    steps = body.get("steps") if isinstance(body.get("steps"), list) else []
    for i, r in enumerate(rows):
        step = steps[i] if i < len(steps) and isinstance(steps[i], Mapping) else {}
        pad = "    " * (base or depth.get(step.get("turn_id"), 0))
        off = (f"+{fmt_duration(r['offset_ms'])}" if r["offset_ms"] is not None
               and r["offset_ms"] >= 0.5 else "")  # no "+0ms" noise
        head = f"  {pad}{str(r['n']):>3}. {off:>9} {r['kind'][:18]:<18} {r['label']}"
        lines.append(_fit(head, width, red).rstrip())
        ind = f"{'':>16}{pad}"
        details = []
        if r["exit_code"] is not None:
            details.append(f"exit {r['exit_code']}")
        if r["duration_ms"] is not None and r["duration_ms"] >= 0.5:  # no "0ms" noise
            details.append(fmt_duration(r["duration_ms"]))
        if r["tokens"]:
            details.append(fmt_tokens(r["tokens"]))
        if r["cost"] is not _NO_COST:
            details.append(fmt_usd(r["cost"]))
        if details:
            lines.append(f"{ind}{' · '.join(details)}")
        if r["output"]:
            lines.append(_fit(f"{ind}→ {r['output']}", width, red))
        if r["error"]:
            lines.append(_fit(f"{ind}✗ {r['error']}", width, red))
        for x in spawned.get(r["n"], ()):
            lines.append(_fit(f"{ind}    ↳ subagent {x.get('nickname') or x.get('agent_id')}: "
                              f"trace {x.get('trace_id') or '(not traced yet)'}", width, red))
    if s["errors"]:
        lines.append(f"  {len(s['errors'])} error(s):")
        lines.extend(_fit(f"    ✗ {e}", width, red) for e in s["errors"])
    if s["final_answer"]:
        import textwrap

        answer = textwrap.wrap(" ".join(s["final_answer"].split()), max(20, width - 4))
        lines.append("  final answer:")
        lines.extend(f"    {ln}" for ln in answer[:8])
        if len(answer) > 8:
            lines.append("    … (`spool show --json` prints it whole)")
    return "\n".join(lines)
