"""Read and state commands: status, history, errors, retry, pause/resume,
sessions, show, cleanup, test.

People get rich tables; ``--json`` prints one JSON array (list commands) or
one object (``status``) with the stable keys documented in each command's
help.  Times in JSON are Unix epoch seconds (float) or null.

Only typer and the standard library are imported at module level (this module
is imported by ``spool --help``); SQLAlchemy, rich and httpx load inside the
commands.  The SQL lives in spool/queries.py.
"""
from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional

import typer

from ..cli import app, friendly, wake_worker
from ..errors import SpoolError

DEFAULT_LIMIT = "20"


# --- helpers ----------------------------------------------------------------------

_friendly = friendly


def parse_limit(value: str, flag: str = "--limit") -> int:
    """An integer >= 1, or a SpoolError saying so."""
    try:
        n = int(str(value).strip())
    except ValueError:
        raise SpoolError(f"{flag} {value!r} is not a whole number.",
                         f"Pass {flag} 1 or more, e.g. {flag} 20.") from None
    if n < 1:
        raise SpoolError(f"{flag} must be at least 1 (got {n}).",
                         f"Pass {flag} 1 or more, e.g. {flag} 20.")
    return n


def _engine():
    from .. import db

    return db.open_db()


@contextmanager
def _database(write: bool = False) -> Iterator[Any]:
    """One command's look at the database: a read (or write) transaction on a
    fresh engine, disposed of afterwards."""
    from .. import db

    engine = _engine()
    try:
        with (db.write if write else db.read)(engine) as conn:
            yield conn
    finally:
        engine.dispose()


def _now() -> float:
    return time.time()


def _print_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))


def _console():
    """Rich console; piped output (not a terminal) gets 140 columns instead of rich's
    80, so tables stay readable in logs and CI (COLUMNS still wins)."""
    import sys

    from rich.console import Console

    if not sys.stdout.isatty() and not os.environ.get("COLUMNS"):
        return Console(width=140)
    return Console()


def _fmt_time(epoch: float | None) -> str:
    from ..timeline import fmt_time

    return fmt_time(epoch)


def _short(s: str | None, n: int = 12) -> str:
    return "" if s is None else (s if len(s) <= n else s[:n])


def _print_rows(rows: list[dict], as_json: bool, empty: str, title: str, columns: list[str],
                cells: Callable[[dict], list[Any]]) -> None:
    """A list command's output: the rows as JSON, ``empty`` when there are none,
    else a table with one line of ``cells(row)`` per row."""
    if as_json:
        _print_json(rows)
    elif not rows:
        typer.echo(empty)
    else:
        _console().print(_table(title, columns, [cells(r) for r in rows]))


def _table(title: str, columns: list[str], rows: list[list[Any]]):
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_lines=False)
    for c in columns:
        # Ids, times and states never wrap; free text (names, messages) folds.
        free = c in ("name", "message", "last error", "project", "")
        table.add_column(c, overflow="fold" if free else "ellipsis", no_wrap=not free)
    for r in rows:
        table.add_row(*["" if v is None else str(v) for v in r])
    return table


def project_here(cwd: Path | None = None) -> Path:
    """The project the cwd belongs to: the directory holding .spool/config.json
    (walking up), else the cwd itself."""
    from ..config import find_project

    cwd = Path(cwd or os.getcwd()).resolve()
    return find_project(cwd) or cwd


def worker_state(home: Path) -> dict:
    """{"running": bool, "pid": int | None} from SPOOL_HOME/worker.lock.

    Running only if someone actually holds the lock (spool.lockfile looks it up
    in /proc/locks without taking it, so a hook starting a worker at that very
    moment is never misled).  The pid is what the worker wrote into the file.
    """
    from .. import paths
    from ..lockfile import holder

    running, pid = holder(home / paths.WORKER_LOCK)
    return {"running": running, "pid": pid}


def spool_bytes(home: Path) -> int:
    from .. import paths

    total = 0
    for suffix in ("", "-wal"):
        try:
            total += os.path.getsize(str(paths.db_path(home)) + suffix)
        except OSError:
            pass
    return total


def _resolve_ids(conn, ids: List[str]) -> list[str]:
    from .. import queries

    out = []
    for given in ids:
        found = queries.resolve_trace_id(conn, given)
        if isinstance(found, str):
            out.append(found)
        elif not found:
            raise SpoolError(f"no trace with id {given!r}.",
                             "Run `spool history` to see trace ids.")
        else:
            raise SpoolError(f"{given!r} matches several traces ({', '.join(found)}).",
                             "Give more characters of the id.")
    return out


# --- status ---------------------------------------------------------------------------

@app.command()
@_friendly
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
    with _database() as conn:
        counts = queries.counts(conn)
        outbox = queries.outbox_by_state(conn)
        nxt = queries.next_attempt_at(conn)
        p_at = queries.paused_at(conn, str(project))
    worker = worker_state(home)
    result = {
        "project": str(project), "paused": p_at is not None, "paused_at": p_at,
        "config_source": source, **counts, "outbox": outbox, "next_attempt_at": nxt,
        "worker_running": worker["running"], "worker_pid": worker["pid"],
        "spool_bytes": spool_bytes(home), "overflow_files": len(ingest.overflow_files(home)),
        "home": str(home), "db_path": str(paths.db_path(home)),
    }
    if as_json:
        _print_json(result)
        return
    console = _console()
    state = "PAUSED since " + _fmt_time(p_at) if p_at is not None else "recording"
    worker_txt = (f"running (pid {worker['pid']})" if worker["pid"] else "running") \
        if worker["running"] else "not running"
    rows = [
        ["project", f"{project} ({state})"],
        ["config", source],
        ["events / sessions / traces",
         f"{counts['events']:,} / {counts['sessions']:,} / {counts['traces']:,}"],
        ["outbox", ", ".join(f"{k} {v:,}" for k, v in outbox.items())],
        ["next attempt", _fmt_time(nxt) if nxt is not None else "-"],
        ["worker", worker_txt],
        ["spool size", f"{result['spool_bytes'] / 1e6:.1f} MB ({result['db_path']})"],
        ["quarantined events", f"{counts['quarantined']:,}"],
        ["overflow files waiting", str(result["overflow_files"])],
    ]
    console.print(_table("spool status", ["", ""], rows))


# --- history ----------------------------------------------------------------------------

@app.command()
@_friendly
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
        engine = _engine()
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
            _print_json(done)
        else:
            typer.echo(f"Forgot {done['traces']:,} delivered trace(s) "
                       f"({done['outbox']:,} outbox rows, {done['attempts']:,} attempts).")
        return
    n = parse_limit(limit)
    with _database() as conn:
        rows = queries.history(conn, n)
    _print_rows(
        rows, as_json, "No traces yet.", f"history (newest {n} traces)",
        ["trace", "kind", "name", "session", "created", "state", "attempts", "delivered",
         "sink"],
        lambda r: [_short(r["trace_id"]), r["kind"], r["name"], _short(r["session_id"]),
                   _fmt_time(r["created_at"]), r["state"] or "-", r["attempts"],
                   _fmt_time(r["sent_at"]) if r["sent_at"] else "-", r["sink"] or "-"])


# --- errors ----------------------------------------------------------------------------------

@app.command()
@_friendly
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
    with _database() as conn:
        rows = queries.errors(conn, n, ingest.hook_error_lines(paths.spool_home()))
    _print_rows(
        rows, as_json, "No errors.", f"errors (newest {n})",
        ["time", "kind", "trace", "sink", "status", "message"],
        lambda r: [_fmt_time(r["at"]), r["kind"], _short(r["trace_id"]), r["sink"],
                   r["http_status"] or r["error_class"] or "", r["message"]])


# --- retry ----------------------------------------------------------------------------------

def _requeue(engine, now: float, ids: list[str] | None) -> list[dict]:
    """spool.deliver.requeue when the delivery module provides it, else ours."""
    from .. import db, queries

    try:
        from ..outbox import requeue as deliver_requeue  # type: ignore[attr-defined]
    except ImportError:
        deliver_requeue = None
    if deliver_requeue is not None:
        with db.read(engine) as conn:
            wanted = queries.retry_candidates(conn, ids)
        if not wanted:
            return []
        # Rows held by a project pause are not retry candidates: name only ours.
        deliver_requeue(engine, now, trace_ids=sorted({r["trace_id"] for r in wanted}))
        with db.write(engine) as conn:
            queries.hold_paused(conn, now)
        return wanted
    with db.write(engine) as conn:
        return queries.requeue(conn, now, ids)


@app.command()
@_friendly
def retry(
    trace_ids: Optional[List[str]] = typer.Argument(
        None, metavar="[TRACE_ID]...", help="Only these traces (ids or unique prefixes)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be retried; change nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON array."),
) -> None:
    """Requeue failed, dead and held deliveries (all, or the traces named) to go now.

    Rows held because their project is paused stay held (`spool resume`).
    JSON: an array of the rows retried (or that would be, with --dry-run),
    keys outbox_id, trace_id, sink, state (before), attempts, last_status,
    last_error, held_reason, next_attempt_at (before).
    """
    from .. import db, queries

    engine = _engine()
    try:
        with db.read(engine) as conn:
            ids = _resolve_ids(conn, trace_ids) if trace_ids else None
            if dry_run:
                rows = queries.retry_candidates(conn, ids)
        if not dry_run:
            rows = _requeue(engine, _now(), ids)
    finally:
        engine.dispose()
    if rows and not dry_run:
        wake_worker()
    verb = "Would retry" if dry_run else "Retrying"
    _print_rows(
        rows, as_json, "Nothing to retry.",
        f"{verb} {len(rows)} deliver{'y' if len(rows) == 1 else 'ies'}",
        ["trace", "sink", "state", "attempts", "last status", "last error"],
        lambda r: [_short(r["trace_id"]), r["sink"], r["state"], r["attempts"], r["last_status"],
                   r["held_reason"] if r["state"] == "held" and r["held_reason"]
                   else r["last_error"]])


# --- pause / resume ------------------------------------------------------------------------------

@app.command()
@_friendly
def pause() -> None:
    """Pause this project: record nothing here, send nothing until `spool resume`.

    Its traces not yet delivered wait (held, reason "project paused").

    The project is the directory holding .spool/config.json (walking up from
    the cwd), or the cwd itself.
    """
    from .. import queries

    project = str(project_here())
    with _database(write=True) as conn:
        res = queries.pause(conn, project, _now())
    word = "was already paused" if res["already"] else "paused"
    typer.echo(f"{project} {word}: nothing is recorded or sent for it until `spool resume`"
               f" ({res['held']} waiting deliveries held).")


@app.command()
@_friendly
def resume() -> None:
    """Resume this project: record again, and send its held traces now."""
    from .. import queries

    project = str(project_here())
    with _database(write=True) as conn:
        res = queries.resume(conn, project, _now())
    if not res["was_paused"]:
        typer.echo(f"{project} was not paused.")
        return
    if res["released"]:
        wake_worker()
    typer.echo(f"{project} resumed: recording again; {res['released']} held deliveries released.")


# --- sessions / show ----------------------------------------------------------------------------

@app.command()
@_friendly
def sessions(
    limit: str = typer.Option(DEFAULT_LIMIT, "-n", "--limit", metavar="N",
                              help="How many sessions (most recently active first), at least 1."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON array."),
) -> None:
    """Codex sessions, most recently active first.

    JSON: an array of objects with keys session_id, project, cwd, model,
    state (open|ended|final), first_event_at, last_event_at (epoch), events,
    turns, traces (int).
    """
    from .. import queries

    n = parse_limit(limit)
    with _database() as conn:
        rows = queries.sessions(conn, n)
    _print_rows(
        rows, as_json, "No sessions yet.", f"sessions (newest {n})",
        ["session", "project", "state", "first event", "last event", "events", "turns", "traces"],
        lambda r: [r["session_id"], r["project"] or r["cwd"], r["state"],
                   _fmt_time(r["first_event_at"]), _fmt_time(r["last_event_at"]), r["events"],
                   r["turns"], r["traces"]])


@app.command()
@_friendly
def show(
    trace_id: str = typer.Argument(..., help="A trace id, or a unique prefix of one."),
    as_json: bool = typer.Option(False, "--json", help="Print the stored trace body (JSON)."),
) -> None:
    """One trace as a readable timeline: steps, durations, tokens, errors.

    Then its delivery state per sink.  --json prints the stored body as is.
    """
    from .. import queries, timeline

    with _database() as conn:
        (tid,) = _resolve_ids(conn, [trace_id])
        row = queries.get_trace(conn, tid)
    try:
        body = json.loads(row["body"])
    except (TypeError, ValueError):
        body = None
    if as_json:
        typer.echo(row["body"] if body is None else json.dumps(body, indent=2, sort_keys=True))
        return
    typer.echo(f"trace {row['trace_id']}  session {row['session_id'] or '-'}"
               f"  created {_fmt_time(row['created_at'])}")
    if not isinstance(body, dict):
        typer.echo("  (the stored body is not a JSON object; `spool show --json` prints it)")
    else:
        body.setdefault("name", row["name"])
        body.setdefault("kind", row["kind"])
        typer.echo(timeline.render(body))
    for o in row["outbox"]:
        extra = ""
        if o["state"] == "sent":
            extra = f" at {_fmt_time(o['sent_at'])}"
        elif o["last_error"] or o["held_reason"]:
            extra = f": {o['held_reason'] or o['last_error']}"
        typer.echo(f"  → {o['sink']}: {o['state']} after {o['attempts']} attempt(s){extra}")


# --- cleanup ------------------------------------------------------------------------------------------

@app.command()
@_friendly
def cleanup(
    older_than: Optional[str] = typer.Option(
        None, "--older-than", metavar="DAYS",
        help="Forget delivered data older than this many days (default: the retention setting)."),
    as_json: bool = typer.Option(False, "--json", help="Print what was removed as one JSON object."),
) -> None:
    """Apply retention now; never deletes anything undelivered.

    Runs spool.maintenance.retention: delivered sessions' events, traces,
    outbox rows and attempts older than --older-than (default
    SPOOL_RETENTION_DAYS).  JSON keys: sessions, raw_events, traces, outbox,
    attempts (rows deleted).
    """
    older_s = None
    if older_than is not None:
        try:
            days = float(older_than)
        except ValueError:
            raise SpoolError(f"--older-than {older_than!r} is not a number of days.",
                             "Pass e.g. --older-than 30.") from None
        if not days >= 0 or days == float("inf"):
            raise SpoolError(f"--older-than must be zero or more days (got {older_than}).",
                             "Pass e.g. --older-than 30.")
        older_s = days * 86400.0
    try:
        from ..maintenance import retention, retention_seconds  # type: ignore[attr-defined]
    except ImportError:
        raise SpoolError("this spool has no retention support yet.",
                         "Update spool, or use `spool history --clear`.") from None
    if older_s is None:
        older_s = retention_seconds()
        if older_s is None:
            raise SpoolError("retention is off (SPOOL_RETENTION_DAYS=0): nothing to clean.",
                             "Pass --older-than DAYS to clean up anyway.")
    engine = _engine()
    try:
        result = retention(engine, _now(), older_s)
    finally:
        engine.dispose()
    if as_json:
        _print_json(result)
        return
    done = ", ".join(f"{k} {v}" for k, v in (result or {}).items()) or "nothing"
    typer.echo(f"Cleanup done: {done}.")


# --- test -----------------------------------------------------------------------------------------------

def test_trace(now: float, project: str | None = None) -> dict:
    """The small trace `spool test` sends (the columns of a traces row, body a dict).

    ``project`` decides which config (agent id, base URL) the sink uses.
    """
    import uuid

    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    tid = str(uuid.uuid4())
    body = {
        "trace_id": tid, "kind": "test", "name": "Connection Test",
        "description": "spool connection test", "current_datetime": iso,
        "started_at": now, "ended_at": now, "duration_ms": 0.0,
        "input_summary": "spool test", "output_summary": "ok",
        "steps": [{"kind": "user_prompt", "name": "spool test", "started_at": now,
                   "ended_at": now, "duration_ms": 0.0}],
        "errors": [],
    }
    return {"trace_id": tid, "kind": "test", "project": project, "name": "Connection Test",
            "body": body, "session_id": None, "turn_id": None, "revision": 0,
            "created_at": now}


@app.command("test")
@_friendly
def test_cmd(
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Show the payload sent."),
    sink: str = typer.Option("infinium", "--sink", help="Which sink to test."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Send a small "Connection Test" trace through the real sink; show the answer.

    Reports the HTTP status and the server's message; exits 1 unless sent.

    JSON keys: sink, ok (bool), status (HTTP status|null), error_class,
    message, response_id, and payload (with -v).
    """
    try:
        from ..sinks import TraceRow, default_sinks
    except ImportError:
        raise SpoolError("this spool has no sinks to test yet.", "Update spool.") from None
    sinks = default_sinks()
    if sink not in sinks:
        raise SpoolError(f"unknown sink {sink!r}.", f"Use one of: {', '.join(sorted(sinks))}.")
    s = sinks[sink]
    try:
        row = TraceRow.from_db(test_trace(_now(), str(project_here())))
        payload = s.render(row)
        outcome = s.send(row, payload)
    finally:
        s.close()
    ok = outcome.kind == "sent" if outcome.kind else (
        outcome.status is not None and 200 <= outcome.status < 300)
    result = {"sink": sink, "ok": ok, "status": outcome.status,
              "error_class": outcome.error_class, "message": outcome.message,
              "response_id": outcome.response_id}
    text_payload = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else str(payload)
    if verbose:
        result["payload"] = text_payload
    if as_json:
        _print_json(result)
    else:
        if verbose:
            typer.echo("Payload:")
            try:
                typer.echo(json.dumps(json.loads(text_payload), indent=2, ensure_ascii=False))
            except ValueError:
                typer.echo(text_payload)
        answer = (f"answered HTTP {outcome.status}" if outcome.status is not None
                  else "no HTTP response")
        what = "OK" if ok else "FAILED"
        msg = f" - {outcome.message}" if outcome.message else ""
        err = f" ({outcome.error_class})" if outcome.error_class and not ok else ""
        extra = f", trace id {outcome.response_id}" if outcome.response_id else ""
        typer.echo(f"{what}: {sink} {answer}{err}{msg}{extra}")
    if not ok:
        raise typer.Exit(1)
