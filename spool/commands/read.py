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
from pathlib import Path

import typer

from ..app import app, friendly
from ..errors import SpoolError
from ..lockfile import worker_state
from .context import database, open_engine, parse_limit, project_here, resolve_ids
from .output import fmt_time, print_json, print_rows, rich_console, short, table

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
    state = "PAUSED since " + fmt_time(p_at) if p_at is not None else "recording"
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


# --- history ----------------------------------------------------------------------------

@app.command()
@friendly
def history(
    limit: str = typer.Option(DEFAULT_LIMIT, "-n", "--limit", metavar="N",
                              help="How many traces (newest first), at least 1."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON array."),
    clear: bool = typer.Option(False, "--clear",
                               help="Forget delivered history (traces every sink has sent)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before --clear."),
) -> None:
    """Traces, newest first: one row per trace and sink.

    JSON: an array of objects with keys trace_id, kind, name, session_id,
    project, created_at (epoch), sink, state (pending|in_flight|sent|failed|
    dead|held, null if not queued), attempts, sent_at (epoch|null),
    last_status (HTTP status|null), last_error, next_attempt_at.

    --clear deletes only traces whose every outbox row is 'sent' (with their
    outbox rows and attempts); nothing undelivered is ever touched.
    """
    from .. import db, queries

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
    with database() as conn:
        rows = queries.history(conn, n)
    print_rows(
        rows, as_json, "No traces yet.", f"history (newest {n} traces)",
        ["trace", "kind", "name", "session", "created", "state", "attempts", "delivered",
         "sink"],
        lambda r: [short(r["trace_id"]), r["kind"], r["name"], short(r["session_id"]),
                   fmt_time(r["created_at"]), r["state"] or "-", r["attempts"],
                   fmt_time(r["sent_at"]) if r["sent_at"] else "-", r["sink"] or "-"])


# --- errors ----------------------------------------------------------------------------------

@app.command()
@friendly
def errors(
    limit: str = typer.Option(DEFAULT_LIMIT, "-n", "--limit", metavar="N",
                              help="How many errors (newest first), at least 1."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON array."),
) -> None:
    """Problems, newest first: delivery failures, quarantine, worker and hook errors.

    JSON: an array of objects with keys at (epoch|null), kind ("delivery",
    "quarantine", "hook", or the recording component: "worker", "ingest",
    "config", "keyring", "job:<name>"), message, trace_id, sink, http_status,
    error_class, outcome (delivery: retry|dead|held; else null).
    """
    from .. import ingest, paths, queries

    n = parse_limit(limit)
    with database() as conn:
        rows = queries.errors(conn, n, ingest.hook_error_lines(paths.spool_home()))
    print_rows(
        rows, as_json, "No errors.", f"errors (newest {n})",
        ["time", "kind", "trace", "sink", "status", "message"],
        lambda r: [fmt_time(r["at"]), r["kind"], short(r["trace_id"]), r["sink"],
                   r["http_status"] or r["error_class"] or "", r["message"]])



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

    JSON: an array of objects with keys session_id, project, cwd, model,
    state (open|ended|final), first_event_at, last_event_at (epoch), events,
    turns, traces (int), run_id.
    """
    from .. import queries

    n = parse_limit(limit)
    with database() as conn:
        rows = queries.sessions(conn, n, run)
    print_rows(
        rows, as_json, f"No sessions of run {run}." if run else "No sessions yet.",
        f"sessions of run {run} (newest {n})" if run else f"sessions (newest {n})",
        ["session", "project", "state", "first event", "last event", "events", "turns", "traces",
         "run"],
        lambda r: [r["session_id"], r["project"] or r["cwd"], r["state"],
                   fmt_time(r["first_event_at"]), fmt_time(r["last_event_at"]), r["events"],
                   r["turns"], r["traces"], r["run_id"] or ""])


@app.command()
@friendly
def show(
    trace_id: str = typer.Argument(..., help="A trace id, or a unique prefix of one."),
    as_json: bool = typer.Option(False, "--json", help="Print the stored trace body (JSON)."),
) -> None:
    """One trace as a readable timeline: steps, durations, tokens, errors.

    Then its delivery state per sink.  --json prints the stored body as is.
    """
    from .. import queries, timeline

    with database() as conn:
        (tid,) = resolve_ids(conn, [trace_id])
        row = queries.get_trace(conn, tid)
    try:
        body = json.loads(row["body"])
    except (TypeError, ValueError):
        body = None
    if as_json:
        typer.echo(row["body"] if body is None else json.dumps(body, indent=2, sort_keys=True))
        return
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
