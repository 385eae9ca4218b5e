"""Read commands: status, history, errors, sessions, show.

People get rich tables; ``--json`` prints one JSON array (list commands) or
one object (``status``) with the stable keys documented in each command's
help.  Times in JSON are Unix epoch seconds (float) or null.

Only typer and the standard library are imported at module level (this module
is imported by ``spool --help``); SQLAlchemy and rich load inside the
commands.  The SQL lives in spool/queries.py.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Optional

import typer

from ..app import app, friendly
from ..errors import SpoolError, UsageError
from ..lockfile import worker_state
from .context import database, open_engine, parse_limit, parse_since, project_here
from .output import (fmt_time, fmt_usd, fmt_when, print_json, print_rows, rich_console, short,
                     table)

DEFAULT_LIMIT = "20"


def spool_bytes(home: Path) -> int:
    from .. import paths

    total = 0
    for suffix in ("", "-wal"):
        try:
            total += os.path.getsize(str(paths.db_path(home)) + suffix)
        except OSError:
            pass
    return total



# --- status ---------------------------------------------------------------------------

@app.command()
@friendly
def status(as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """Spool state at a glance.

    JSON keys: project (str: project root, or cwd without a config), paused
    (bool), paused_at (epoch|null), config_source (config file path or
    "defaults"), events, sessions, traces, quarantined (int counts), outbox
    ({pending, in_flight, sent, failed, dead, held}: rows per state),
    next_attempt_at (epoch|null: earliest pending/failed attempt),
    worker_running (bool), worker_pid (int|null), spool_bytes (db + wal),
    overflow_files (int: events waiting in overflow files), home, db_path.
    """
    from .. import config, ingest, paths, queries

    cwd = Path(os.getcwd()).resolve()
    project = project_here(cwd)
    source = config.load(cwd).source
    home = paths.spool_home()
    with database() as conn:
        counts = queries.counts(conn)
        outbox = queries.outbox_by_state(conn)
        nxt = queries.next_attempt_at(conn)
        p_at = queries.paused_at(conn, str(project))
    worker = worker_state(home)
    result = {
        "project": str(project), "paused": p_at is not None, "paused_at": p_at,
        "config_source": source, **counts, "outbox": outbox, "next_attempt_at": nxt,
        "worker_running": worker.running, "worker_pid": worker.pid,
        "spool_bytes": spool_bytes(home), "overflow_files": len(ingest.overflow_files(home)),
        "home": str(home), "db_path": str(paths.db_path(home)),
    }
    if as_json:
        print_json(result)
        return
    console = rich_console()
    # Not "recording": whether Codex runs spool's hooks here is `spool doctor`'s question.
    state = "PAUSED since " + fmt_time(p_at) if p_at is not None else "not paused"
    worker_txt = (f"running (pid {worker.pid})" if worker.pid else "running") \
        if worker.running else "not running"
    rows = [
        ["project", f"{project} ({state})"],
        ["config", source],
        ["events / sessions / traces",
         f"{counts['events']:,} / {counts['sessions']:,} / {counts['traces']:,}"],
        ["outbox", ", ".join(f"{k} {v:,}" for k, v in outbox.items())],
        ["next attempt", fmt_time(nxt) if nxt is not None else "-"],
        ["worker", worker_txt],
        ["spool size", f"{result['spool_bytes'] / 1e6:.1f} MB ({result['db_path']})"],
        ["quarantined events", f"{counts['quarantined']:,}"],
        ["overflow files waiting", str(result["overflow_files"])],
    ]
    console.print(table("spool status", ["", ""], rows))


# What a newcomer sees when their first Codex run recorded nothing.
NOTHING_YET = "No {} yet. Used Codex here? `spool doctor` checks that it runs spool's hooks."

# --- history ----------------------------------------------------------------------------

def _history_cells(r: dict) -> list:
    """One 80-column history row: the trace id prefix and the state never shrink;
    the name folds, with kind and session on its second line."""
    what = f"{r['name'] or '(unnamed)'}\n{r['kind']} · session {short(r['session_id'], 8) or '-'}"
    if r.get("cost_usd") is not None or r.get("cost_flags"):  # bodies from before cost: none
        what += f" · {fmt_usd(r.get('cost_usd'), bool(r.get('cost_flags')))}"
    state = r["state"] or "-"
    if (r["attempts"] or 0) > 1:
        state += f" ({r['attempts']} tries)"
    return [short(r["trace_id"]), fmt_when(r["created_at"]), state, r["sink"] or "-", what]


HISTORY_COLUMNS = ["trace", "created", "state", "sink", "name"]


def _follow_line(r: dict) -> str:
    return (f"{fmt_when(r['created_at'])}  {short(r['trace_id'])}  {r['state'] or '-':<9} "
            f"{r['sink'] or '-':<8} {r['kind']}  {r['name'] or ''}").rstrip()


def _follow(filters: dict, as_json: bool, poll: float = 0.5) -> None:
    """Print traces as they are added (rowid order) until Ctrl-C."""
    from .. import db, queries

    engine = open_engine()
    try:
        with db.read(engine) as conn:
            after = queries.last_trace_rowid(conn)
        typer.echo("Following new traces (Ctrl-C to stop)...", err=True)
        while True:
            with db.read(engine) as conn:
                rows = queries.traces_after(conn, after, **filters)
            for r in rows:
                after = max(after, r.pop("rowid"))
                typer.echo(json.dumps(r, sort_keys=True, default=str) if as_json
                           else _follow_line(r))
            time.sleep(poll)
    except KeyboardInterrupt:
        pass
    finally:
        engine.dispose()


@app.command()
@friendly
def history(
    limit: str = typer.Option(DEFAULT_LIMIT, "-n", "--limit", metavar="N",
                              help="How many traces (newest first), at least 1."),
    session: Optional[str] = typer.Option(None, "--session", metavar="ID",
                                          help="Only this session's traces (id or prefix)."),
    project: Optional[Path] = typer.Option(None, "--project", metavar="DIR",
                                           help="Only traces of this project (or below it)."),
    state: Optional[str] = typer.Option(None, "--state", metavar="STATE",
                                        help="Only deliveries in this state: pending, "
                                             "in_flight, sent, failed, dead or held."),
    since: Optional[str] = typer.Option(None, "--since", metavar="WHEN",
                                        help="Only traces created since: an age (30m, 2h, 7d) "
                                             "or a date (2026-11-29)."),
    follow: bool = typer.Option(False, "-f", "--follow",
                                help="Then print new traces as they arrive, until Ctrl-C "
                                     "(--json: one JSON object per line)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON array."),
    clear: bool = typer.Option(False, "--clear",
                               help="Forget delivered history (traces every sink has sent)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before --clear."),
) -> None:
    """Traces, newest first: one row per trace and sink.

    The table fits 80 columns: trace id prefix (enough for `spool show`),
    created, delivery state (with the requests made when more than one),
    sink, then the name with kind and session below it.

    JSON: an array of objects with keys trace_id, kind, name, session_id,
    project, created_at (epoch), sink, state (pending|in_flight|sent|failed|
    dead|held, null if not queued), attempts (requests made), sent_at
    (epoch|null), last_status (HTTP status|null), last_error, next_attempt_at,
    cost_usd (the trace's, USD|null when not priced), cost_flags (why not).
    The table shows the cost after the session (`*`: partly priced).

    --clear deletes only traces whose every outbox row is 'sent' (with their
    outbox rows and attempts); nothing undelivered is ever touched.
    """
    from .. import db, queries, usage
    from ..schema import OUTBOX_STATES

    if clear:
        engine = open_engine()
        try:
            with db.read(engine) as conn:
                n = queries.count_delivered(conn)
            if n == 0:
                typer.echo("No delivered traces to forget.")
                return
            if not yes and not typer.confirm(
                    f"Forget {n:,} delivered trace(s)? Undelivered traces are kept."):
                raise SpoolError("nothing forgotten.", "Pass --yes to skip the question.")
            with db.write(engine) as conn:
                done = queries.clear_delivered(conn)
        finally:
            engine.dispose()
        if as_json:
            print_json(done)
        else:
            typer.echo(f"Forgot {done['traces']:,} delivered trace(s) "
                       f"({done['outbox']:,} outbox rows, {done['attempts']:,} attempts).")
        return
    n = parse_limit(limit)
    if state is not None and state not in OUTBOX_STATES:
        raise UsageError(f"--state {state!r} is not a delivery state.",
                         f"Pass one of: {', '.join(OUTBOX_STATES)}.")
    filters = {"session": session, "state": state,
               "since": parse_since(since) if since is not None else None,
               "project": str(Path(project).expanduser().resolve()) if project else None}
    with database() as conn:
        rows = queries.history(conn, n, **filters)
        costs = usage.trace_costs(conn, sorted({r["trace_id"] for r in rows}))
    for r in rows:
        r.update(costs.get(r["trace_id"]) or {"cost_usd": None, "cost_flags": []})
    print_rows(rows, as_json, NOTHING_YET.format("traces") if not any(filters.values())
               else "No traces match.", f"history (newest {n} traces)", HISTORY_COLUMNS,
               _history_cells)
    if follow:
        _follow(filters, as_json)


# --- errors ----------------------------------------------------------------------------------

@app.command()
@friendly
def errors(
    limit: str = typer.Option(DEFAULT_LIMIT, "-n", "--limit", metavar="N",
                              help="How many errors (newest first), at least 1."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON array."),
) -> None:
    """Problems, newest first: delivery failures, quarantine, worker and hook errors.

    One row per failure.  A delivery failure's outcome says what became of
    that delivery since: later sent, retrying, held, dead (or forgotten).

    JSON: an array of objects with keys at (epoch|null), kind ("delivery",
    "quarantine", "hook", or the recording component: "worker", "ingest",
    "config", "keyring", "job:<name>"), message, trace_id, sink, http_status,
    error_class, outcome (delivery: this attempt's retry|dead|held; else null),
    result (delivery: later sent|retrying|held|dead|forgotten; else null).
    """
    from .. import ingest, paths, queries

    n = parse_limit(limit)
    with database() as conn:
        rows = queries.errors(conn, n, ingest.hook_error_lines(paths.spool_home()))
    print_rows(
        rows, as_json, "No errors.", f"errors (newest {n})",
        ["time", "kind", "trace", "outcome", "message"], _error_cells)


def _error_cells(r: dict) -> list:
    """One 80-column errors row: the message folds, prefixed by the status or class."""
    kind = r["sink"] if r["kind"] == "delivery" and r["sink"] else r["kind"]
    status = r["http_status"] and f"HTTP {r['http_status']}" or r["error_class"]
    msg = r["message"] or ""
    if status and not msg.startswith(str(status)):
        msg = f"{status}: {msg}" if msg else str(status)
    return [fmt_when(r["at"]), kind, short(r["trace_id"]) or "-", r.get("result") or "-", msg]



# --- sessions / show ----------------------------------------------------------------------------

@app.command()
@friendly
def sessions(
    limit: str = typer.Option(DEFAULT_LIMIT, "-n", "--limit", metavar="N",
                              help="How many sessions (most recently active first), at least 1."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON array."),
    run: str = typer.Option(None, "--run", metavar="ID",
                            help="Only the sessions of this run (their SPOOL_RUN_ID)."),
) -> None:
    """Codex sessions, most recently active first.

    The table fits 80 columns: the full session id with its project below,
    state, last event, events, turns (`spool show SESSION` lists its traces).

    JSON: an array of objects with keys session_id, project, cwd, model,
    state (open|ended|final), first_event_at, last_event_at (epoch), events,
    turns, traces (int), run_id, cost_usd (USD, null when nothing was priced),
    unpriced (model requests without a price).  The table shows the cost
    under the project (`*`: partly priced).
    """
    from .. import queries, usage

    n = parse_limit(limit)
    with database() as conn:
        rows = queries.sessions(conn, n, run)
        costs = usage.session_costs(conn, [r["session_id"] for r in rows])
    for r in rows:
        c = costs.get(r["session_id"]) or {}
        r["cost_usd"], r["unpriced"] = c.get("cost_usd"), c.get("unpriced", 0)
    print_rows(
        rows, as_json, f"No sessions of run {run}." if run else NOTHING_YET.format("sessions"),
        f"sessions of run {run} (newest {n})" if run else f"sessions (newest {n})",
        ["session / project", "state", "last event", "events", "turns"],
        lambda r: [f"{r['session_id']}\n{r['project'] or r['cwd'] or '-'}"
                   + (f"\nrun {r['run_id']}" if r.get("run_id") else "")
                   + _session_cost(r), r["state"],
                   fmt_when(r["last_event_at"]), r["events"], r["turns"]])


def _session_cost(r: dict) -> str:
    if r["cost_usd"] is None and not r["unpriced"]:
        return ""  # no priced usage recorded (yet)
    return f"\ncost {fmt_usd(r['cost_usd'], bool(r['unpriced']))}"


def _show_ids(conn, given: str) -> list[str]:
    """Trace ids for a trace id/prefix, else a session id/prefix (its traces)."""
    from .. import queries

    found = queries.resolve_trace_id(conn, given)
    if isinstance(found, str):
        return [found]
    if found:
        raise SpoolError(f"{given!r} matches several traces ({', '.join(found)}).",
                         "Give more characters of the id.")
    sess = queries.resolve_session_id(conn, given)
    if isinstance(sess, list):
        if sess:
            raise SpoolError(f"{given!r} matches several sessions ({', '.join(sess)}).",
                             "Give more characters of the id.")
        raise SpoolError(f"no trace or session with id {given!r}.",
                         "Run `spool history` or `spool sessions` to see ids.")
    ids = queries.session_trace_ids(conn, sess)
    if not ids:
        raise SpoolError(f"session {sess} has no trace yet.",
                         "Its turns are traced when they end; see `spool sessions`.")
    return ids


@app.command()
@friendly
def show(
    trace_id: str = typer.Argument(..., metavar="ID",
                                   help="A trace id or a session id (its traces), or a unique "
                                        "prefix of one."),
    as_json: bool = typer.Option(False, "--json", help="Print the stored trace body (JSON; "
                                                       "an array for a session)."),
) -> None:
    """One trace (or a session's traces) as a readable timeline.

    Model, cwd and git branch, tokens, steps with durations and exit codes,
    errors, the final answer; then its delivery state per sink (attempts:
    requests really made).  --json prints the stored body as is.
    """
    from .. import queries, timeline

    with database() as conn:
        ids = _show_ids(conn, trace_id)
        rows = [queries.get_trace(conn, tid) for tid in ids]
    bodies = []
    for row in rows:
        try:
            bodies.append(json.loads(row["body"]))
        except (TypeError, ValueError):
            bodies.append(None)
    if as_json:
        if len(rows) == 1:
            row, body = rows[0], bodies[0]
            typer.echo(row["body"] if body is None else json.dumps(body, indent=2, sort_keys=True))
        else:
            typer.echo(json.dumps([b if b is not None else r["body"] for r, b in zip(rows, bodies)],
                                  indent=2, sort_keys=True))
        return
    for i, (row, body) in enumerate(zip(rows, bodies)):
        if i:
            typer.echo("")
        _show_one(row, body, timeline)


def _show_one(row: dict, body, timeline) -> None:
    typer.echo(f"trace {row['trace_id']}  session {row['session_id'] or '-'}"
               f"  created {fmt_time(row['created_at'])}")
    if not isinstance(body, dict):
        typer.echo("  (the stored body is not a JSON object; `spool show --json` prints it)")
    else:
        body.setdefault("name", row["name"])
        body.setdefault("kind", row["kind"])
        typer.echo(timeline.render(body))
    for o in row["outbox"]:
        extra = ""
        if o["state"] == "sent":
            extra = f" at {fmt_time(o['sent_at'])}"
        elif o["last_error"] or o["held_reason"]:
            extra = f": {o['held_reason'] or o['last_error']}"
        typer.echo(f"  → {o['sink']}: {o['state']} after {o['attempts']} attempt(s){extra}")
