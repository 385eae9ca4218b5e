"""Set-up commands: init, doctor, uninstall, update-credentials.

``spool init`` leaves a project whose hooks really run under Codex 0.169:

1. finds Codex (``--codex-bin`` or PATH).  If it is missing, init changes
   nothing and says how to install it: hooks written without the trust step
   would be skipped silently by Codex, which is the failure spool exists to
   avoid;
2. validates ``.codex/hooks.json`` and ``$CODEX_HOME/config.toml`` before
   writing anything (a malformed file is an error and stays untouched);
3. writes ``.spool/config.json`` (0600, never the secret) and creates the
   spool database;
4. merges spool's hook into every event of ``<project>/.codex/hooks.json``;
5. sets ``[features] hooks = true`` in config.toml (formatting kept);
6. trusts the project in Codex - asked when interactive, on by default with
   ``--no-interactive``, never with ``--no-trust-project`` - and then spool's
   own hooks only, through ``codex app-server``;
7. stores the secret in the OS keyring (``--agent-secret``, else the prompt;
   a secret in INFINIUM_AGENT_SECRET is used from the environment and not
   copied anywhere); no keyring backend -> a clear error at the end, never a
   plaintext fallback;
8. adds ``.spool/`` to ``.gitignore`` when the project is a git repository:
   asked when interactive, done by default with ``--no-interactive``
   (``--gitignore/--no-gitignore`` decides either way).

Every step writes only when something changes, so a second ``spool init``
leaves every file byte-identical.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import typer

from ..cli import app, friendly, wake_worker
from ..errors import SpoolError

GRANULARITY_HELP = "turn: one trace per turn; session: one per session; both."


_friendly = friendly


def _project(project: Optional[Path], walk_up: bool) -> Path:
    from .. import config

    start = Path(project or os.getcwd()).expanduser()
    if not start.is_dir():
        raise SpoolError(f"{start} is not a directory.", "Pass --project with an existing directory.")
    start = start.resolve()
    if walk_up and project is None:
        return config.find_project(start) or start
    return start


def _is_git_repo(project: Path) -> bool:
    return any((d / ".git").exists() for d in (project, *project.parents))


GITIGNORE_LINES = {".spool", ".spool/", "/.spool", "/.spool/", ".spool/*", "/.spool/*"}


def _gitignored(project: Path) -> bool:
    try:
        lines = (project / ".gitignore").read_text("utf-8").splitlines()
    except (FileNotFoundError, UnicodeDecodeError):
        return False
    return any(ln.strip() in GITIGNORE_LINES for ln in lines)


def _report(title: str, done: list[str], nothing: str) -> None:
    """What a setup command did, one line each (or that there was nothing to do)."""
    typer.echo(title)
    for line in done:
        typer.echo(f"  - {line}")
    if not done:
        typer.echo(f"  {nothing}")


def _add_gitignore(project: Path) -> None:
    path = project / ".gitignore"
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        text = ""
    if text and not text.endswith("\n"):
        text += "\n"
    path.write_text(text + ".spool/\n", encoding="utf-8")


# --- init ---------------------------------------------------------------------------

@app.command()
@_friendly
def init(
    agent_id: Optional[str] = typer.Option(None, "--agent-id", help="Infinium agent id "
                                           "(default: INFINIUM_AGENT_ID, the existing config, or "
                                           "a prompt; none: traces go to the file sink)."),
    agent_secret: Optional[str] = typer.Option(
        None, "--agent-secret", help="Agent secret to keep in the OS keyring. Prefer the prompt "
        "or INFINIUM_AGENT_SECRET: command lines are visible to other processes."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="Infinium API base URL."),
    granularity: Optional[str] = typer.Option(None, "--granularity", help=GRANULARITY_HELP),
    no_interactive: bool = typer.Option(False, "--no-interactive",
                                        help="Never prompt: trust the project and add .spool/ "
                                             "to .gitignore unless told otherwise."),
    no_trust_project: bool = typer.Option(False, "--no-trust-project",
                                          help="Do not mark the project trusted in Codex (its "
                                               "hooks will not run until it is)."),
    codex_home_opt: Optional[Path] = typer.Option(None, "--codex-home", metavar="DIR",
                                                  help="Codex home (default: CODEX_HOME or "
                                                       "~/.codex)."),
    codex_bin: Optional[str] = typer.Option(None, "--codex-bin", metavar="PATH",
                                            help="The codex binary (default: codex on PATH)."),
    project_opt: Optional[Path] = typer.Option(None, "--project", metavar="DIR",
                                               help="The project (default: the current directory)."),
    gitignore: Optional[bool] = typer.Option(None, "--gitignore/--no-gitignore",
                                             help="Add .spool/ to .gitignore (default: ask; yes "
                                                  "with --no-interactive in a git repository)."),
) -> None:
    """Set spool up for a project: config, Codex hooks, and Codex trust so they really run."""
    from .. import codex as cx
    from .. import config, credentials, db

    interactive = not no_interactive
    project = _project(project_opt, walk_up=False)
    home = cx.codex_home(codex_home_opt)
    done: list[str] = []
    notes: list[str] = []

    # 1-2. Everything that can fail on the user's files fails before any write.
    binary = cx.find_codex(codex_bin)
    version = cx.codex_version(binary)
    if version is None:
        raise SpoolError(f"`{binary} --version` failed.", cx.INSTALL_HINT)
    hooks_file = cx.hooks_path(project)
    existing_hooks = cx.read_hooks(hooks_file)
    cx.read_toml(home)
    old_cfg = config.read_file(project)
    if granularity is not None and granularity not in config.GRANULARITIES:
        raise SpoolError(f"--granularity {granularity!r} is not one of "
                         f"{', '.join(config.GRANULARITIES)}.", "Pass turn, session or both.")

    # 3. Project config.
    agent = agent_id or os.environ.get("INFINIUM_AGENT_ID") or old_cfg.get("agent_id")
    if not agent and interactive:
        agent = typer.prompt("Infinium agent id (empty: keep traces in local files)",
                             default="", show_default=False).strip() or None
    new_cfg = dict(old_cfg)
    if agent:
        new_cfg["agent_id"] = agent
    if base_url:
        new_cfg["base_url"] = credentials.normalize_base_url(base_url)
    new_cfg["granularity"] = granularity or old_cfg.get("granularity") or "turn"
    codex_meta = dict(old_cfg.get("codex") or {})
    if existing_hooks is None and "hooks_json_created" not in codex_meta:
        codex_meta["hooks_json_created"] = True
    codex_meta.setdefault("hooks_json_created", False)
    new_cfg["codex"] = codex_meta
    if new_cfg != old_cfg:
        config.write_file(project, new_cfg)
        done.append(f"wrote {config.config_path(project)}")
    db.open_db().dispose()
    if base_url:  # the user chose this URL: the env secret may go there for this project
        credentials.approve_base_url(None, project, new_cfg["base_url"])

    # 4. hooks.json.
    command = cx.hook_command()
    change = cx.install_hooks(project, command)
    if change.changed:
        done.append(f"{'updated' if change.existed else 'created'} {change.path} "
                    f"(spool's hook on {len(cx.EVENTS)} events)")

    # 5. Feature flag.
    if cx.ensure_feature_flag(home):
        done.append(f"set [features] hooks = true in {cx.config_toml(home)}")

    # 6. Trust: the project, then spool's own hooks.
    trusted_project = cx.project_trust(home, project) == "trusted"
    vt = cx.version_tuple(version)
    needs_trust = vt is None or vt >= cx.MIN_HOOK_TRUST_VERSION
    untrusted_left = 0
    if not trusted_project and not no_trust_project and interactive:
        no_trust_project = not typer.confirm(
            f"Trust {project} in Codex? Codex only runs a project's hooks (and loads its "
            ".codex/ config and exec policies) once the project is trusted.", default=True)
    with_server = needs_trust and (trusted_project or not no_trust_project)
    if not needs_trust:
        notes.append(f"Codex {version} predates hook trust: nothing to trust.")
    if with_server:
        with cx.AppServer(binary, home) as server:
            if not trusted_project:
                server.trust_project(project)
                trusted_project = True
                done.append(f"trusted the project {project} in Codex")
            result = cx.trust_spool_hooks(server, project, command)
        if result.newly_trusted:
            done.append(f"trusted spool's {len(result.newly_trusted)} hooks in Codex "
                        "(other hooks left as they were)")
        untrusted_left = len(result.untrusted_after)
        if result.listed == 0:
            untrusted_left = len(cx.EVENTS)
    if not trusted_project:
        notes.append(f"The project is not trusted in Codex, so Codex will NOT run spool's hooks "
                     f"(nor any hook in {hooks_file}). Run `spool init` again and accept, or "
                     "trust the project in Codex.")

    # 7. Secret.
    secret_error: SpoolError | None = None
    secret = agent_secret
    env_secret = os.environ.get(credentials.ENV_SECRET)
    if agent and not secret and not env_secret and interactive:
        if _stored_secret(agent, new_cfg) is None:
            secret = typer.prompt("Infinium agent secret (input hidden; empty: skip)",
                                  default="", hide_input=True, show_default=False) or None
    if agent and secret:
        try:
            credentials.store(agent, new_cfg.get("base_url") or config.DEFAULT_BASE_URL, secret)
            done.append(f"stored the agent secret in the OS keyring ({credentials.SERVICE})")
        except SpoolError as exc:
            secret_error = exc
    elif agent and env_secret:
        notes.append(f"The agent secret comes from {credentials.ENV_SECRET} in the environment "
                     "(not copied anywhere).")
    elif agent and _stored_secret(agent, new_cfg) is None:
        notes.append("No agent secret yet: traces are held until you run "
                     "`spool update-credentials` (or set INFINIUM_AGENT_SECRET).")
    if not agent:
        notes.append("No agent id: traces go to the file sink. Run `spool init --agent-id ...` "
                     "to send them to Infinium.")

    # 8. .gitignore.
    if _is_git_repo(project) and not _gitignored(project):
        add = gitignore
        if add is None:
            add = typer.confirm("Add .spool/ to .gitignore?", default=True) if interactive else True
        if add:
            _add_gitignore(project)
            done.append(f"added .spool/ to {project / '.gitignore'}")

    _report(f"spool init: {project} (Codex {version} at {binary}, CODEX_HOME {home})", done,
            "Nothing to change: spool was already set up here.")
    for line in notes:
        typer.echo(f"  note: {line}")
    if untrusted_left:
        raise SpoolError(f"{untrusted_left} of spool's hooks are still not trusted by Codex.",
                         "Run `spool doctor` to see which, then `spool init` again.")
    if secret_error is not None:
        raise secret_error
    if trusted_project and needs_trust:
        typer.echo("Codex will now run spool's hooks in this project. Check with `spool doctor`.")


def _stored_secret(agent: str, cfg: dict) -> object | None:
    """The stored credentials for this agent (None if none or no keyring)."""
    from .. import config, credentials

    try:
        c = config._from_mapping(config.Config(), {k: v for k, v in cfg.items() if k != "codex"})
        return credentials.resolve(c, env={})
    except SpoolError:
        return None


# --- doctor ---------------------------------------------------------------------------

@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str
    fix: str = ""


def run_checks(project: Path, home: Path, codex_bin: Optional[str], online: bool) -> list[Check]:
    from .. import codex as cx
    from .. import config, credentials, paths

    checks: list[Check] = []
    add = checks.append
    init_fix = f"Run `spool init` in {project}."

    binary = None
    version = None
    try:
        binary = cx.find_codex(codex_bin)
        version = cx.codex_version(binary)
    except SpoolError as exc:
        add(Check("codex", "fail", exc.reason, exc.instruction))
    if binary is not None:
        if version is None:
            add(Check("codex", "fail", f"`{binary} --version` failed.", cx.INSTALL_HINT))
            binary = None
        elif (cx.version_tuple(version) or (0, 0, 0)) < (0, 119, 0):
            add(Check("codex", "fail", f"Codex {version} at {binary} is too old for hooks.",
                      "Upgrade: `npm install -g @openai/codex`."))
        else:
            add(Check("codex", "ok", f"Codex {version} at {binary}"))

    cfg_path = config.config_path(project)
    if cfg_path.is_file():
        add(Check("project config", "ok", str(cfg_path)))
    else:
        add(Check("project config", "fail", f"no {cfg_path}", init_fix))

    try:
        flag = cx.feature_flag(home)
        if flag is True:
            add(Check("feature flag", "ok", f"[features] hooks = true in {cx.config_toml(home)}"))
        elif flag is False:
            add(Check("feature flag", "fail", f"[features] hooks = false in {cx.config_toml(home)}",
                      init_fix))
        else:
            add(Check("feature flag", "warn", f"[features] hooks not set in "
                      f"{cx.config_toml(home)} (on by default in recent Codex)", init_fix))
        trust = cx.project_trust(home, project)
        if trust == "trusted":
            add(Check("project trusted", "ok", f"{project} is trusted in Codex"))
        else:
            add(Check("project trusted", "fail",
                      f"{project} is {'not trusted' if trust is None else trust} in Codex: "
                      "Codex does not load its .codex/hooks.json", init_fix))
    except SpoolError as exc:
        add(Check("codex config", "fail", exc.reason, exc.instruction))

    hooks_ok = False
    try:
        data = cx.read_hooks(cx.hooks_path(project))
        found = {ev for ev, _g, _h, _c in cx.spool_positions(data)}
        missing = [e for e in cx.EVENTS if e not in found]
        if data is None:
            add(Check("hooks installed", "fail", f"no {cx.hooks_path(project)}", init_fix))
        elif missing:
            add(Check("hooks installed", "fail", f"spool's hook missing for {', '.join(missing)}",
                      init_fix))
        else:
            commands = {c for _e, _g, _h, c in cx.spool_positions(data)}
            broken = [c for c in commands if not _command_runs(c)]
            if broken:
                add(Check("hooks installed", "fail", f"the hook command points at a missing "
                          f"interpreter or file: {broken[0]}", init_fix))
            else:
                hooks_ok = True
                add(Check("hooks installed", "ok", f"{len(cx.EVENTS)} events in {cx.hooks_path(project)}"))
    except SpoolError as exc:
        add(Check("hooks installed", "fail", exc.reason, exc.instruction))

    if binary is not None and hooks_ok:
        try:
            with cx.AppServer(binary, home) as server:
                listing = server.list_hooks(project)
            mine = cx.spool_listed(listing, project)
            bad = [h for h in mine if h.get("trustStatus") not in ("trusted", "managed")]
            if not mine:
                add(Check("hooks trusted", "fail", "Codex lists none of spool's hooks for this "
                          "project (project not trusted?)", init_fix))
            elif bad:
                add(Check("hooks trusted", "fail", f"{len(bad)} of spool's {len(mine)} hooks are "
                          f"{bad[0].get('trustStatus')} in Codex (skipped silently)", init_fix))
            else:
                add(Check("hooks trusted", "ok", f"Codex trusts all {len(mine)} of spool's hooks"))
        except SpoolError as exc:
            add(Check("hooks trusted", "fail", exc.reason, exc.instruction))
    else:
        add(Check("hooks trusted", "fail", "not checked (needs Codex and installed hooks)",
                  init_fix))

    spool_home = paths.spool_home()
    try:
        paths.ensure_home(spool_home)
        probe = spool_home / f".doctor-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        add(Check("spool home", "ok", f"{spool_home} is writable"))
    except OSError as exc:
        add(Check("spool home", "fail", f"{spool_home} is not writable ({exc.strerror})",
                  "Fix its permissions or set SPOOL_HOME to a writable directory."))

    ws = worker_state(spool_home)
    if ws["running"]:
        add(Check("worker", "ok", f"running (pid {ws['pid']})" if ws["pid"] else "running"))
    elif os.environ.get("SPOOL_NO_AUTOSTART", "") not in ("", "0"):
        add(Check("worker", "warn", "not running, and SPOOL_NO_AUTOSTART is set so hooks will "
                  "not start it", "Run `spool worker` (or unset SPOOL_NO_AUTOSTART)."))
    else:
        add(Check("worker", "warn", "not running (the hooks start it on the next Codex event)",
                  "Run `spool worker` to start it now."))

    try:
        cfg = config.load(project)
        if "infinium" in cfg.effective_sinks():
            creds = credentials.resolve(cfg)
            if creds is None:
                add(Check("credentials", "fail", f"no secret for agent {cfg.agent_id} at "
                          f"{cfg.base_url}", "Run `spool update-credentials` (or set "
                          f"{credentials.ENV_SECRET})."))
            else:
                add(Check("credentials", "ok", f"agent {creds.agent_id}, secret from {creds.source}"))
        else:
            add(Check("credentials", "ok", f"none needed (sinks: {', '.join(cfg.effective_sinks())})"))
    except SpoolError as exc:
        add(Check("credentials", "fail", exc.reason, exc.instruction))

    try:  # the OTLP sink's endpoint (and, --online, an empty export request)
        cfg = config.load(project)
        if "otlp" in cfg.effective_sinks():
            from ..sinks import otlp as otlp_sink

            for status, detail, fix in otlp_sink.doctor(cfg, os.environ, online):
                add(Check("otlp", status, detail, fix))
    except SpoolError as exc:
        add(Check("otlp", "fail", exc.reason, exc.instruction))

    if online:
        add(_online_check(project))
    return checks


def worker_state(home: Path) -> dict:
    """{"running": bool, "pid": int | None}: is SPOOL_HOME/worker.lock held?
    (looked up without taking the lock: see spool.lockfile)."""
    from .read import worker_state as _state

    return _state(home)


def _command_runs(command: str) -> bool:
    import shlex

    try:
        argv = shlex.split(command)
    except ValueError:
        return False
    if not argv or not os.access(argv[0], os.X_OK):
        return False
    scripts = [a for a in argv[1:] if a.endswith("hook.py")]
    return all(Path(s).is_file() for s in scripts)


def _online_check(project: Path) -> Check:
    from .. import config

    try:
        cfg = config.load(project)
    except SpoolError as exc:
        return Check("sink reachable", "fail", exc.reason, exc.instruction)
    if "infinium" not in cfg.effective_sinks():
        return Check("sink reachable", "ok", "no network sink configured")
    import httpx

    try:
        r = httpx.get(cfg.base_url, timeout=min(cfg.timeout, 10), verify=cfg.verify_ssl)
        return Check("sink reachable", "ok", f"{cfg.base_url} answered HTTP {r.status_code}")
    except httpx.HTTPError as exc:
        return Check("sink reachable", "fail", f"{cfg.base_url}: {type(exc).__name__}",
                     "Check the network, INFINIUM_BASE_URL / --base-url, and proxies.")


@app.command()
@_friendly
def doctor(
    online: bool = typer.Option(False, "--online", help="Also check that the sink answers."),
    as_json: bool = typer.Option(False, "--json", help='Print {"ok": bool, "checks": [...]}.'),
    codex_home_opt: Optional[Path] = typer.Option(None, "--codex-home", metavar="DIR"),
    codex_bin: Optional[str] = typer.Option(None, "--codex-bin", metavar="PATH"),
    project_opt: Optional[Path] = typer.Option(None, "--project", metavar="DIR"),
) -> None:
    """Check that Codex will really run spool's hooks here, and that traces can go out.

    Exit status 1 if any check fails (warnings do not count).  --json keys per
    check: name, status (ok|warn|fail), detail, fix.
    """
    from .. import codex as cx

    project = _project(project_opt, walk_up=True)
    checks = run_checks(project, cx.codex_home(codex_home_opt), codex_bin, online)
    ok = not any(c.status == "fail" for c in checks)
    if as_json:
        typer.echo(json.dumps({"ok": ok, "project": str(project),
                               "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        marks = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}
        for c in checks:
            typer.echo(f"[{marks[c.status]}] {c.name}: {c.detail}")
            if c.status != "ok" and c.fix:
                typer.echo(f"       fix: {c.fix}")
        typer.echo("All checks passed." if ok else "Some checks failed.")
    if not ok:
        raise typer.Exit(1)


# --- uninstall ------------------------------------------------------------------------

def undelivered(engine, project: Path) -> list[str]:
    """Trace ids of this project with an outbox row not yet sent."""
    from sqlalchemy import text

    from .. import db

    with db.read(engine) as conn:
        rows = conn.execute(text(
            "SELECT DISTINCT t.trace_id FROM traces t JOIN outbox o ON o.trace_id = t.trace_id "
            "WHERE t.project = :p AND o.state != 'sent' ORDER BY t.trace_id"),
            {"p": str(project)}).all()
    return [r[0] for r in rows]


def delete_traces(engine, trace_ids: list[str]) -> None:
    from sqlalchemy import bindparam, text

    from .. import db

    if not trace_ids:
        return
    with db.write(engine) as conn:
        for stmt in ("DELETE FROM delivery_attempts WHERE trace_id IN :ids",
                     "DELETE FROM outbox WHERE trace_id IN :ids",
                     "DELETE FROM traces WHERE trace_id IN :ids"):
            conn.execute(text(stmt).bindparams(bindparam("ids", expanding=True)),
                         {"ids": trace_ids})


@app.command()
@_friendly
def uninstall(
    yes: bool = typer.Option(False, "-y", "--yes", help="Answer yes to every question."),
    codex_home_opt: Optional[Path] = typer.Option(None, "--codex-home", metavar="DIR"),
    project_opt: Optional[Path] = typer.Option(None, "--project", metavar="DIR"),
) -> None:
    """Remove spool from a project (hooks, their trust, config, keyring secret).

    Other tools' hooks stay exactly as they are.  Undelivered traces are deleted
    only after confirmation (-y: yes).  The project's Codex trust is left alone.
    """
    from .. import codex as cx
    from .. import config, credentials, db, paths

    project = _project(project_opt, walk_up=True)
    home = cx.codex_home(codex_home_opt)
    cfg_data = config.read_file(project)
    cx.read_hooks(cx.hooks_path(project))  # malformed -> error before any change
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
    if n:
        done.append(f"removed spool's {n} hook trust entries from {cx.config_toml(home)}")

    if paths.db_path().exists():
        engine = db.open_db()
        try:
            pending = undelivered(engine, project)
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

    _report(f"spool uninstall: {project}", done, "Nothing to remove: spool was not set up here.")
    typer.echo(f"  note: Codex still trusts the project; remove [projects.\"{project}\"] from "
               f"{cx.config_toml(home)} if you want that undone.")


# --- update-credentials -----------------------------------------------------------------

@app.command("update-credentials")
@_friendly
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

    project = _project(project_opt, walk_up=True)
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
        cfg_data = {**cfg_data, "base_url": credentials.normalize_base_url(base_url)}
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
    from .. import deliver

    engine = db.open_db()
    try:
        if base_url:
            credentials.approve_base_url(engine, project, base)
            typer.echo(f"Approved {base} for the agent secret of {project}.")
        released = deliver.release_held(engine, time.time())
    finally:
        engine.dispose()
    if released:
        wake_worker()
    typer.echo(f"Released {released} held deliveries; the worker sends them now.")
