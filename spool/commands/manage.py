"""Commands that change what spool holds or sends: retry, pause, resume,
cleanup, update-credentials, test.

Only typer and the standard library are imported at module level (this module
is imported by ``spool --help``); SQLAlchemy and httpx load inside the commands.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import List, Optional

import typer

from ..app import app, friendly, wake_worker
from ..errors import SpoolError, UsageError
from .context import (configured_sinks, database, open_engine, project_dir, project_here,
                      resolve_ids, sink_target)
from .output import print_json, print_rows, short


def _now() -> float:
    return time.time()


# --- retry ----------------------------------------------------------------------------------

def _requeue(engine, now: float, ids: list[str] | None) -> list[dict]:
    """Make the retry candidates (all, or of these traces) due now; the rows as they were."""
    from .. import db, outbox, queries

    with db.read(engine) as conn:
        wanted = queries.retry_candidates(conn, ids)
    if not wanted:
        return []
    # Rows held by a project pause are not retry candidates: name only ours.
    outbox.requeue(engine, now, trace_ids=sorted({r["trace_id"] for r in wanted}))
    with db.write(engine) as conn:
        queries.hold_paused(conn, now)
    return wanted


@app.command()
@friendly
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

    engine = open_engine()
    try:
        with db.read(engine) as conn:
            ids = resolve_ids(conn, trace_ids) if trace_ids else None
            if dry_run:
                rows = queries.retry_candidates(conn, ids)
        if not dry_run:
            rows = _requeue(engine, _now(), ids)
    finally:
        engine.dispose()
    if rows and not dry_run:
        wake_worker()
    verb = "Would retry" if dry_run else "Retrying"
    print_rows(
        rows, as_json, "Nothing to retry.",
        f"{verb} {len(rows)} deliver{'y' if len(rows) == 1 else 'ies'}",
        ["trace", "sink", "state", "attempts", "last status", "last error"],
        lambda r: [short(r["trace_id"]), r["sink"], r["state"], r["attempts"], r["last_status"],
                   r["held_reason"] if r["state"] == "held" and r["held_reason"]
                   else r["last_error"]])


# --- pause / resume ------------------------------------------------------------------------------

@app.command()
@friendly
def pause() -> None:
    """Pause this project: record nothing here, send nothing until `spool resume`.

    Its traces not yet delivered wait (held, reason "project paused").

    The project is the directory holding .spool/config.json (walking up from
    the cwd), or the cwd itself.
    """
    from .. import queries

    project = str(project_here())
    with database(write=True) as conn:
        res = queries.pause(conn, project, _now())
    word = "was already paused" if res["already"] else "paused"
    typer.echo(f"{project} {word}: nothing is recorded or sent for it until `spool resume`"
               f" ({res['held']} waiting deliveries held).")


@app.command()
@friendly
def resume() -> None:
    """Resume this project: record again, and send its held traces now."""
    from .. import queries

    project = str(project_here())
    with database(write=True) as conn:
        res = queries.resume(conn, project, _now())
    if not res["was_paused"]:
        typer.echo(f"{project} was not paused.")
        return
    if res["released"]:
        wake_worker()
    typer.echo(f"{project} resumed: recording again; {res['released']} held deliveries released.")



# --- cleanup ------------------------------------------------------------------------------------------

@app.command()
@friendly
def cleanup(
    older_than: Optional[str] = typer.Option(
        None, "--older-than", metavar="DAYS",
        help="Forget delivered data older than this many days (0: all of it; default: "
             "SPOOL_RETENTION_DAYS, 30)."),
    as_json: bool = typer.Option(False, "--json", help="Print what was removed as one JSON object."),
) -> None:
    """Apply retention now; never deletes anything undelivered.

    Deletes delivered sessions' events, turns, traces, outbox rows and
    delivery attempts older than --older-than (default SPOOL_RETENTION_DAYS).
    JSON keys: sessions, raw_events, turns, traces, outbox, attempts (rows
    deleted).
    """
    older_s = None
    if older_than is not None:
        try:
            days = float(older_than)
        except ValueError:
            raise UsageError(f"--older-than {older_than!r} is not a number of days.",
                             "Pass e.g. --older-than 30.") from None
        if not days >= 0 or days == float("inf"):
            raise UsageError(f"--older-than must be zero or more days (got {older_than}).",
                             "Pass e.g. --older-than 30.")
        older_s = days * 86400.0
    from ..maintenance import retention, retention_seconds

    if older_s is None:
        older_s = retention_seconds()
        if older_s is None:
            raise SpoolError("retention is off (SPOOL_RETENTION_DAYS=0): nothing to clean.",
                             "Pass --older-than DAYS to clean up anyway.")
    engine = open_engine()
    try:
        result = retention(engine, _now(), older_s)
    finally:
        engine.dispose()
    if as_json:
        print_json(result)
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


def _test_one(name: str, s, project: str, verbose: bool) -> dict:
    row_data = test_trace(_now(), project)
    from ..sinks import TraceRow

    row = TraceRow.from_db(row_data)
    target = sink_target(s, row)
    payload = s.render(row)
    outcome = s.send(row, payload)
    ok = outcome.kind == "sent" if outcome.kind else (
        outcome.status is not None and 200 <= outcome.status < 300)
    removed = False
    if hasattr(s, "directory_for") or hasattr(s, "file_name"):  # local sinks (file, ATIF)
        left = s.file_name(row) if hasattr(s, "file_name") else f"{row.trace_id}.json"
        try:  # keep nothing from a test (an ATIF reader would take it for a session)
            (Path(target) / left).unlink()
            removed = True
        except OSError:
            pass
    result = {"sink": name, "ok": ok, "target": target, "status": outcome.status,
              "attempted": outcome.attempted,
              "error_class": outcome.error_class, "message": outcome.message,
              "response_id": None if removed else outcome.response_id}
    if verbose:
        result["payload"] = (payload.decode("utf-8", "replace") if isinstance(payload, bytes)
                             else str(payload))
    return result


def _test_line(r: dict) -> str:
    what = "OK" if r["ok"] else "FAILED"
    if r["status"] is not None:
        answer = f"{r['target']} answered HTTP {r['status']}"
    elif r["ok"] and r["response_id"] is None:
        answer = f"wrote a test trace to {r['target']} and removed it"
    elif r["ok"]:
        answer = f"delivered to {r['target']}"
    else:  # nothing sent (no credentials, a refused URL) is not a silent server
        answer = f"{r['target']}: {'no answer' if r.get('attempted', True) else 'not sent'}"
    msg = f" - {r['message']}" if r["message"] else ""
    err = f" ({r['error_class']})" if r["error_class"] and not r["ok"] else ""
    extra = f", trace id {r['response_id']}" if r["response_id"] and r["status"] else ""
    return f"{what}: {r['sink']} {answer}{err}{msg}{extra}"


@app.command("test")
@friendly
def test_cmd(
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Show the payload sent."),
    sink: Optional[str] = typer.Option(None, "--sink", metavar="NAME",
                                       help="Test only this sink (default: every sink the "
                                            "project's config sends to)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (an array when "
                                                       "several sinks are tested)."),
) -> None:
    """Send a small "Connection Test" trace through the configured sinks; show the answer.

    Shows where it went (the URL, or the directory for the file sink, whose
    test file is removed again), the HTTP status and the server's message;
    exits 1 unless every sink took it.  Refused while the project is paused.

    JSON keys: sink, ok (bool), target (URL or directory), status (HTTP
    status|null), attempted (bool: false when nothing was sent), error_class,
    message, response_id, and payload (with -v).
    """
    from .. import queries

    project = project_here()
    with database() as conn:
        paused = queries.paused_at(conn, str(project))
    if paused is not None:
        raise SpoolError(f"{project} is paused: spool sends nothing for it.",
                         "Run `spool resume` first.")
    if sink is None:
        names, known = configured_sinks(project)
    else:
        from ..sinks import default_sinks

        known, names = default_sinks(), [sink]
        if sink not in known:
            for s in known.values():
                s.close()
            raise UsageError(f"--sink {sink!r} is not a known sink.",
                             f"Use one of: {', '.join(sorted(known))}.")
    try:
        results = [_test_one(name, known[name], str(project), verbose) for name in names]
    finally:
        for s in known.values():
            s.close()
    if as_json:
        print_json(results[0] if len(results) == 1 else results)
    else:
        for r in results:
            if verbose:
                typer.echo(f"Payload for {r['sink']}:")
                try:
                    typer.echo(json.dumps(json.loads(r["payload"]), indent=2, ensure_ascii=False))
                except ValueError:
                    typer.echo(r["payload"])
            typer.echo(_test_line(r))
    if not all(r["ok"] for r in results):
        raise typer.Exit(1)


# --- update-credentials -----------------------------------------------------------------

@app.command("update-credentials")
@friendly
def update_credentials(
    agent_id: Optional[str] = typer.Option(None, "--agent-id", help="Infinium agent id "
                                           "(default: the project's)."),
    agent_secret: Optional[str] = typer.Option(
        None, "--agent-secret", help="The new secret (default: a hidden prompt)."),
    no_interactive: bool = typer.Option(False, "--no-interactive", help="Never prompt."),
    project_opt: Optional[Path] = typer.Option(None, "--project", metavar="DIR"),
    base_url: Optional[str] = typer.Option(
        None, "--base-url", help="Infinium API base URL: written to the project config and "
        "approved for the secret in INFINIUM_AGENT_SECRET."),
) -> None:
    """Store new Infinium credentials, then send the traces held for lack of them."""
    from .. import config, credentials, db

    project = project_dir(project_opt, walk_up=True)
    cfg_data = config.read_file(project)
    agent = agent_id or cfg_data.get("agent_id") or os.environ.get("INFINIUM_AGENT_ID")
    if not agent and not no_interactive:
        agent = typer.prompt("Infinium agent id").strip() or None
    if not agent:
        raise SpoolError("no agent id.", "Pass --agent-id.")
    secret = agent_secret
    if not secret and not no_interactive:
        secret = typer.prompt("Infinium agent secret (input hidden)", hide_input=True)
    if base_url:
        cfg_data = {**cfg_data, "base_url": config.check_base_url(base_url, "--base-url")}
    base = cfg_data.get("base_url") or config.DEFAULT_BASE_URL
    if secret:
        credentials.store(agent, base, secret)
        typer.echo(f"Stored the agent secret for {agent} in the OS keyring.")
    elif not os.environ.get(credentials.ENV_SECRET):
        raise SpoolError("no agent secret given.",
                         f"Pass --agent-secret, answer the prompt, or set {credentials.ENV_SECRET}.")
    if config.config_path(project).exists() and cfg_data.get("agent_id") != agent:
        config.write_file(project, {**cfg_data, "agent_id": agent})
        typer.echo(f"Set agent_id in {config.config_path(project)}.")
    elif base_url:
        config.write_file(project, {**cfg_data, "agent_id": agent})
        typer.echo(f"Set base_url in {config.config_path(project)}.")
    from .. import outbox

    engine = db.open_db()
    try:
        if base_url:
            credentials.approve_base_url(engine, project, base)
            typer.echo(f"Approved {base} for the agent secret of {project}.")
        released = outbox.release_held(engine, time.time())
    finally:
        engine.dispose()
    if released:
        wake_worker()
    typer.echo(f"Released {released} held deliveries; the worker sends them now.")
