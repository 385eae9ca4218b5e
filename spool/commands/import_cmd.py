"""`spool import`: backfill past Codex sessions from their rollout files (spool.backfill)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from ..app import app, friendly
from .context import parse_since


def _print_summary(s: dict, dry_run: bool, problems: list[str]) -> None:
    verb = "would import" if dry_run else "imported"
    t = s["tokens"]
    typer.echo(f"{s['files']} rollout file(s), {s['bytes'] / 1e6:.1f} MB read: {verb}"
               f" {s['turns']} turn(s) of {s['sessions']} session(s), {s['events']} event(s);"
               f" tokens input {t['input_tokens']} (cached {t['cached_input_tokens']}),"
               f" output {t['output_tokens']} (reasoning {t['reasoning_output_tokens']}),"
               f" total {t['total_tokens']}.")
    skipped = []
    if s["already_imported"]:
        skipped.append(f"{s['already_imported']} turn(s) already imported or delivered")
    if s["captured_by_hooks"]:
        skipped.append(f"{s['captured_by_hooks']} turn(s) captured by the hooks")
    if s["paused"]:
        skipped.append(f"{s['paused']} turn(s) or session events of paused projects")
    if s["still_being_written"]:
        skipped.append(f"{s['still_being_written']} file(s) still being written"
                       " (their open turn and session end are left for a later import)")
    if skipped:
        typer.echo("Skipped: " + "; ".join(skipped) + ".")
    if problems:
        # A dry run records nothing, so no `spool errors` to see: the details are here.
        where = ":\n" + "\n".join(problems) if dry_run else ": see `spool errors`."
        typer.echo(f"{len(s['skipped_files'])} file(s) skipped, {s['bad_lines']} unreadable"
                   f" line(s), {sum(s['unknown_lines'].values())} line(s) of unknown type"
                   + where, err=True)


@app.command("import")
@friendly
def import_(
    paths: Optional[List[Path]] = typer.Argument(
        None, help="Rollout files or directories (default: $CODEX_HOME/sessions, else"
        " ~/.codex/sessions, and archived_sessions beside it)."),
    since: Optional[str] = typer.Option(None, "--since", metavar="WHEN",
                                        help="Only rollouts written since: an age (2h, 7d) or"
                                        " a local date/time (2026-11-29, 2026-11-29T10:00)."),
    dry_run: bool = typer.Option(False, "--dry-run",
                                 help="Only say what would be imported: sessions, turns, tokens."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
    settle: float = typer.Option(600.0, "--settle", metavar="SECONDS", hidden=True,
                                 help="A rollout written to this recently may still grow."),
) -> None:
    """Backfill past Codex sessions (CLI, IDE, app) from their rollout files.

    Makes the same traces the hooks make, with the same ids: a session the
    hooks captured gets nothing new, a partly captured one only its missing
    turns, and importing twice imports nothing twice.
    """
    import json

    from .. import backfill, db, ingest
    from ..app import wake_worker

    since_ts = parse_since(since) if since is not None else None
    roots = list(paths) if paths else backfill.default_roots()
    missing = [str(p) for p in roots if paths and not p.exists()]
    if missing:
        typer.echo(f"Error: no such file or directory: {', '.join(missing)}.", err=True)
        raise typer.Exit(2)
    if not paths and not any(p.exists() for p in roots):
        typer.echo(f"No Codex sessions found in {' or '.join(str(p) for p in roots)}:"
                   " set CODEX_HOME or name the rollout files or directories to import.",
                   err=as_json)
        if as_json:  # still one JSON object on stdout: nothing imported
            typer.echo(json.dumps({**backfill.Summary().to_dict(), "dry_run": dry_run},
                                  sort_keys=True))
        return
    engine = db.open_db()
    try:
        # Hook events waiting to be parsed name no session yet: parse them first (the
        # worker's ingest step, also in a dry run), as they decide which turns to skip.
        ingest.ingest_all(engine)
        files = []
        total = 0
        for f in backfill.discover([p for p in roots if p.exists()]):
            try:
                st = f.stat()
            except OSError:
                files.append(f)  # reported by the import
                continue
            if since_ts is None or st.st_mtime >= since_ts:
                files.append(f)
                total += st.st_size
        if sys.stderr.isatty() and not as_json:
            from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                                       TransferSpeedColumn)

            with Progress(TextColumn("importing"), BarColumn(), DownloadColumn(),
                          TextColumn("{task.fields[files]}/%d file(s)" % len(files)),
                          TransferSpeedColumn(), transient=True,
                          console=_stderr_console()) as bar:
                task = bar.add_task("import", total=total, files=0)
                res = backfill.run(
                    engine, files, since=since_ts, dry_run=dry_run, settle=settle,
                    progress=lambda n, k: bar.update(
                        task, advance=n, files=bar.tasks[task].fields["files"] + k))
        else:
            res = backfill.run(engine, files, since=since_ts, dry_run=dry_run, settle=settle)
        if not dry_run and res.events:
            wake_worker()  # the rows are stored parsed: the worker traces and delivers them
    finally:
        engine.dispose()
    summary = res.to_dict()
    summary["dry_run"] = dry_run
    if as_json:
        typer.echo(json.dumps(summary, sort_keys=True))
    else:
        _print_summary(summary, dry_run, res.problems)


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)
