"""The pages of `spool ui` (and `spool export --format html`) as pure functions.

Each takes plain dicts (as spool.queries / spool.usage return them, and parsed trace
bodies) and returns a whole HTML document; no I/O, no clock.  Links are relative to the
page's ``<base>`` (the token prefix), so no page ever writes the token itself.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from .html import bars, duration, esc, href, layout, num, table, usd, when
from .waterfall import failed, waterfall

STATES = ("", "open", "ended", "final")


def _turn_rows(bodies: Sequence[Mapping[str, Any]], link: bool) -> list[list[str]]:
    rows = []
    for b in bodies:
        if b.get("kind") != "turn":
            continue
        steps = [s for s in b.get("steps") or [] if isinstance(s, Mapping)]
        bad = sum(1 for s in steps if failed(s))
        usage = b.get("usage") or {}
        name = esc(b.get("name") or "turn")
        rows.append([
            f'<a href="{href("turn/" + str(b.get("trace_id")))}">{name}</a>' if link
            else f'<a href="#t-{esc(b.get("trace_id"))}">{name}</a>',
            esc(when(b.get("started_at"))), esc(duration(b.get("duration_ms"))),
            num(sum(1 for s in steps if s.get("action") == "model_request")),
            num(sum(1 for s in steps if s.get("action") == "tool_use")),
            num(usage.get("input")), num(usage.get("output")), esc(usd(b.get("cost_usd"))),
            f'<span class="err">{bad}</span>' if bad else "0"])
    return rows


_TURN_HEAD = ("Turn", "Started", "Duration", "Requests", "Tools", "Input", "Output", "Cost",
              "Failed")


def _subagents(bodies: Sequence[Mapping[str, Any]]) -> str:
    agents: dict[str, int] = {}
    for b in bodies:
        for s in b.get("steps") or []:
            if isinstance(s, Mapping) and s.get("agent_id"):
                agents[str(s["agent_id"])] = agents.get(str(s["agent_id"]), 0) + 1
    if not agents:
        return ""
    return "<h2>Subagents</h2>" + table(("Agent", "Steps"),
                                        ([esc(a), num(n)] for a, n in agents.items()), (1,))


def _facts(pairs: Sequence[tuple[str, Any]]) -> str:
    items = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in pairs if v)
    return f'<div class="card"><table>{items}</table></div>'


def sessions_page(rows: Sequence[Mapping[str, Any]], costs: Mapping[str, Mapping[str, Any]],
                  filters: Mapping[str, str], next_after: str | None, *, base: str) -> str:
    """The session list: filters, one row per session, a link to the next page."""
    state_opts = "".join(f'<option value="{s}"{" selected" if filters.get("state") == s else ""}>'
                         f'{s or "any state"}</option>' for s in STATES)
    form = (f'<form class="filters" method="get" action="./">'
            f'<input name="project" placeholder="project path" value="{esc(filters.get("project"))}">'
            f'<input name="date" type="date" value="{esc(filters.get("date"))}">'
            f'<select name="state">{state_opts}</select><button>Filter</button>'
            f'<a href="./">clear</a></form>')
    body = table(
        ("Last activity", "Session", "Project", "Model", "State", "Turns", "Events", "Tokens",
         "Cost"),
        ([esc(when(r["last_event_at"])),
          f'<a class="mono" href="{href("session/" + r["session_id"])}">{esc(r["session_id"])}</a>',
          esc(r.get("project") or r.get("cwd")), esc(r.get("model")), esc(r.get("state")),
          num(r.get("turns")), num(r.get("events")),
          num((costs.get(r["session_id"]) or {}).get("total")),
          esc(usd((costs.get(r["session_id"]) or {}).get("cost_usd")))] for r in rows),
        (5, 6, 7, 8), 'id="sessions"')
    if not rows:
        body = '<p class="muted">No sessions match.</p>'
    pager = ""
    if next_after:
        more = {k: v for k, v in filters.items() if v}
        pager = f'<p class="pager"><a id="next" href="{href("./", **more, after=next_after)}">Older sessions →</a></p>'
    return layout("Sessions", form + body + pager, base=base)


def _session_parts(info: Mapping[str, Any], bodies: Sequence[Mapping[str, Any]],
                   link: bool) -> str:
    turns = [b for b in bodies if b.get("kind") == "turn"]
    usage: dict[str, int] = {}
    cost = 0.0
    priced = False
    for b in turns:
        for k, v in (b.get("usage") or {}).items():
            if isinstance(v, int):
                usage[k] = usage.get(k, 0) + v
        if isinstance(b.get("cost_usd"), (int, float)):
            cost += b["cost_usd"]
            priced = True
    facts = _facts([
        ("Session", f'<span class="mono">{esc(info.get("session_id"))}</span>'),
        ("Project", esc(info.get("project") or info.get("cwd"))), ("Model", esc(info.get("model"))),
        ("State", esc(info.get("state"))), ("Codex", esc(info.get("codex_version"))),
        ("Branch", esc(info.get("git_branch"))),
        ("First event", esc(when(info.get("first_event_at")))),
        ("Last event", esc(when(info.get("last_event_at")))),
        ("Tokens", esc(" · ".join(f"{k} {num(v)}" for k, v in usage.items() if v))),
        ("Cost", esc(usd(cost if priced else None)))])
    listing = (table(_TURN_HEAD, _turn_rows(turns, link), (2, 3, 4, 5, 6, 7, 8), 'id="turns"')
               if turns else '<p class="muted">No turn has been traced yet.</p>')
    return facts + "<h2>Turns</h2>" + listing + _subagents(turns)


def session_page(info: Mapping[str, Any], bodies: Sequence[Mapping[str, Any]], *,
                 base: str) -> str:
    """One session: its facts, totals, turns (links to their timelines), subagents."""
    return layout(f"Session {info.get('session_id')}", _session_parts(info, bodies, True),
                  base=base)


def turn_page(body: Mapping[str, Any], outbox: Sequence[Mapping[str, Any]], *,
              base: str) -> str:
    """One turn as a waterfall, with its facts and delivery rows."""
    usage = body.get("usage") or {}
    facts = _facts([
        ("Session", f'<a class="mono" href="{href("session/" + str(body.get("session_id")))}">'
                    f'{esc(body.get("session_id"))}</a>'),
        ("Prompt", esc(body.get("input_summary"))), ("Answer", esc(body.get("output_summary"))),
        ("Started", esc(when(body.get("started_at")))),
        ("Duration", esc(duration(body.get("duration_ms")))),
        ("Tokens", esc(" · ".join(f"{k} {num(v)}" for k, v in usage.items() if v))),
        ("Cost", esc(usd(body.get("cost_usd")))),
        ("Notes", esc("; ".join(map(str, body.get("notes") or []))))])
    delivery = table(("Sink", "State", "Attempts", "Last status", "Last error"),
                     ([esc(o.get("sink")), esc(o.get("state")), num(o.get("attempts")),
                       esc(o.get("last_status")), f'<span class="err">{esc(o.get("last_error"))}</span>']
                      for o in outbox), (2,)) if outbox else '<p class="muted">No outbox rows.</p>'
    return layout(str(body.get("name") or "Turn"),
                  facts + "<h2>Timeline</h2>" + waterfall(body) + "<h2>Delivery</h2>" + delivery,
                  base=base)


def usage_page(by_day: Mapping[str, Any], by_model: Mapping[str, Any], since: str, *,
               base: str) -> str:
    """Usage by day and by model (spool.usage.report) as SVG bar charts and tables."""
    parts = [f'<p class="muted">Since {esc(since)} (local days). '
             f'Total: {num(by_day["totals"]["total"])} tokens, '
             f'{esc(usd(by_day["totals"]["cost_usd"]))}.</p>']
    for title, rep in (("Tokens by day", by_day), ("Tokens by model", by_model)):
        parts.append(f"<h2>{esc(title)}</h2>")
        parts.append(bars([(str(r["key"]), r["total"]) for r in rep["rows"]], unit=" tok"))
        parts.append(table(("Key", "Requests", "Input", "Cached", "Output", "Total", "Cost"),
                           ([esc(r["key"]), num(r["requests"]), num(r["input"]), num(r["cached"]),
                             num(r["output"]), num(r["total"]), esc(usd(r["cost_usd"]))]
                            for r in rep["rows"]), (1, 2, 3, 4, 5, 6)))
    cost_rows = [(str(r["key"]), r["cost_usd"]) for r in by_day["rows"] if r["cost_usd"]]
    if cost_rows:
        parts.append("<h2>Cost by day</h2>" + bars(cost_rows, fmt=usd))
    if by_day.get("unpriced_models"):
        parts.append(f'<p class="muted">No price for: {esc(", ".join(by_day["unpriced_models"]))}</p>')
    return layout("Usage", "".join(parts), base=base)


def delivery_page(states: Mapping[str, int], errors: Sequence[Mapping[str, Any]],
                  history: Sequence[Mapping[str, Any]], *, base: str) -> str:
    """Undelivered rows by state, the newest problems, the newest traces' delivery."""
    counts = table(tuple(states), [[num(n) for n in states.values()]], range(len(states)))
    errs = table(("At", "Kind", "Sink", "HTTP", "Message"),
                 ([esc(when(e.get("at"))), esc(e.get("kind")), esc(e.get("sink")),
                   esc(e.get("http_status")), f'<span class="err">{esc(e.get("message"))}</span>']
                  for e in errors)) if errors else '<p class="ok">No problems recorded.</p>'
    hist = table(("Created", "Trace", "Sink", "State", "Attempts", "Last error"),
                 ([esc(when(h.get("created_at"))),
                   f'<a href="{href(("turn/" if h.get("kind") == "turn" else "session/") + str(h["trace_id"] if h.get("kind") == "turn" else h.get("session_id")))}">{esc(h.get("name"))}</a>',
                   esc(h.get("sink")), esc(h.get("state")), num(h.get("attempts")),
                   esc(h.get("last_error"))] for h in history), (4,))
    return layout("Delivery", "<h2>Not yet delivered</h2>" + counts + "<h2>Problems</h2>" + errs
                  + "<h2>Recent traces</h2>" + hist, base=base)


def export_document(info: Mapping[str, Any], bodies: Sequence[Mapping[str, Any]]) -> str:
    """The session view as one self-contained file: facts, turns and every turn's timeline."""
    parts = [_session_parts(info, bodies, False)]
    for b in bodies:
        if b.get("kind") == "turn":
            parts.append(f'<h2 id="t-{esc(b.get("trace_id"))}">{esc(b.get("name"))}</h2>'
                         + waterfall(b))
    return layout(f"Session {info.get('session_id')}", "".join(parts), nav=False)


def message_page(title: str, text: str, *, base: str | None) -> str:
    return layout(title, f"<p>{esc(text)}</p>", base=base)
