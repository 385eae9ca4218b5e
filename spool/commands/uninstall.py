"""`spool uninstall`: take spool out of a project, leaving other tools' hooks alone."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..app import app, friendly
from ..errors import SpoolError
from .context import project_dir, remembered_codex
from .output import report


def delete_traces(engine, trace_ids: list[str]) -> None:
    """Delete these traces with their outbox rows and delivery attempts."""
    from .. import db, outbox

    if trace_ids:
        with db.write(engine) as conn:
            outbox.delete_traces(conn, trace_ids)


@app.command()
@friendly
def uninstall(
    yes: bool = typer.Option(False, "-y", "--yes", help="Answer yes to every question."),
    codex_home_opt: Optional[Path] = typer.Option(None, "--codex-home", metavar="DIR"),
    project_opt: Optional[Path] = typer.Option(None, "--project", metavar="DIR"),
    user: bool = typer.Option(False, "--user", help="Also remove spool's user-level hooks "
                              "($CODEX_HOME/hooks.json, from `spool init --user`): every "
                              "project stops recording."),
) -> None:
    """Remove spool from a project (hooks, their trust, config, keyring secret).

    Hooks installed with `spool init --user` serve every project and stay
    unless --user is given.

    Other tools' hooks stay exactly as they are.  Undelivered traces are deleted
    only after confirmation (-y: yes).  The project's Codex trust is left alone.
    """
    from .. import codex as cx
    from .. import config, credentials, db, paths, queries

    project = project_dir(project_opt, walk_up=True)
    codex_home_opt, _bin = remembered_codex(project, codex_home_opt, None)
    home = cx.codex_home(codex_home_opt)
    cfg_data = config.read_file(project)
    cx.read_hooks(cx.hooks_path(project))  # malformed -> error before any change
    cx.read_hooks(cx.user_hooks_path(home))
    if not yes and not typer.confirm(f"Remove spool from {project}?", default=True):
        raise typer.Exit(1)
    done: list[str] = []

    created = bool((cfg_data.get("codex") or {}).get("hooks_json_created"))
    removal = cx.uninstall_hooks(project, delete_if_empty=created)
    if removal.deleted_file:
        done.append(f"deleted {removal.path} (spool had created it; nothing else was in it)")
    elif removal.removed:
        done.append(f"removed spool's {removal.removed} hooks from {removal.path}")
    n = cx.remove_trust_entries(home, removal.removed_keys, removal.moved_keys)
    user_file = cx.user_hooks_path(home)
    if user:
        urem = cx.uninstall_hooks(project, delete_if_empty=False, path=user_file)
        if urem.removed:
            done.append(f"removed spool's {urem.removed} hooks from {urem.path}")
        n += cx.remove_trust_entries(home, urem.removed_keys, urem.moved_keys)
    elif cx.spool_positions(cx.read_hooks(user_file)):
        done.append(f"kept spool's user-level hooks in {user_file} (they serve every "
                    "project; `spool uninstall --user` removes them)")
    if n:
        done.append(f"removed spool's {n} hook trust entries from {cx.config_toml(home)}")

    if paths.db_path().exists():
        engine = db.open_db()
        try:
            with db.read(engine) as conn:
                pending = queries.undelivered_trace_ids(conn, str(project))
            if pending:
                if yes or typer.confirm(f"Delete {len(pending)} undelivered traces of this "
                                        "project?", default=False):
                    delete_traces(engine, pending)
                    done.append(f"deleted {len(pending)} undelivered traces")
                else:
                    done.append(f"kept {len(pending)} undelivered traces in the spool "
                                "(`spool history` lists them)")
        finally:
            engine.dispose()

    agent = cfg_data.get("agent_id")
    if agent:
        try:
            base = cfg_data.get("base_url") or config.DEFAULT_BASE_URL
            if credentials.delete(agent, base):
                done.append("deleted the agent secret from the OS keyring")
        except SpoolError as exc:
            done.append(f"keyring not touched: {exc.reason}")
    cfg_file = config.config_path(project)
    if cfg_file.exists():
        cfg_file.unlink()
        try:
            cfg_file.parent.rmdir()
        except OSError:
            pass
        done.append(f"deleted {cfg_file}")

    report(f"spool uninstall: {project}", done, "Nothing to remove: spool was not set up here.")
    typer.echo(f"  note: Codex still trusts the project; remove [projects.\"{project}\"] from "
               f"{cx.config_toml(home)} if you want that undone.")
