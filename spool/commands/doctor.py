"""`spool doctor`: will Codex really run spool's hooks here, and can traces go out?"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import typer

from ..app import app, friendly
from ..errors import SpoolError
from ..lockfile import worker_state
from .context import codex_meta, configured_sinks, project_dir, remembered_codex


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

    # Where spool's hooks live: the user layer after `spool init --user`, else the project.
    source = cx.hooks_path(project)
    user_level = codex_meta(project).get("hooks") == "user"
    if user_level:
        source = cx.user_hooks_path(home)
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
        if user_level:
            add(Check("project trusted", "ok", "not needed: spool's hooks are at user level "
                      f"({source})"))
        elif trust == "trusted":
            add(Check("project trusted", "ok", f"{project} is trusted in Codex"))
        else:
            add(Check("project trusted", "fail",
                      f"{project} is {'not trusted' if trust is None else trust} in Codex: "
                      "Codex does not load its .codex/hooks.json", init_fix))
    except SpoolError as exc:
        add(Check("codex config", "fail", exc.reason, exc.instruction))

    hooks_ok = False
    try:
        data = cx.read_hooks(source)
        found = {ev for ev, _g, _h, _c in cx.spool_positions(data)}
        missing = [e for e in cx.EVENTS if e not in found]
        if data is None:
            add(Check("hooks installed", "fail", f"no {source}", init_fix))
        elif missing:
            add(Check("hooks installed", "fail", f"spool's hook missing for {', '.join(missing)}",
                      init_fix))
        else:
            commands = {c for _e, _g, _h, c in cx.spool_positions(data)}
            broken = [why for why in map(_missing_part, commands) if why]
            if broken:
                add(Check("hooks installed", "fail", f"{source}: the hook command's {broken[0]} "
                          "does not exist (written on another machine or a removed virtualenv?), "
                          "so Codex's hooks fail silently",
                          f"Run `spool init` in {project} to rewrite it; `spool init --user` "
                          "keeps machine paths out of the project."))
            elif cx.outdated_events(data):
                hooks_ok = True  # they still work, synchronously: upgrade, do not fail
                add(Check("hooks installed", "warn", "the hooks are an older spool's set: "
                          f"{', '.join(cx.outdated_events(data))} make Codex wait (they run "
                          "async now)", "Run `spool init` again to upgrade them."))
            else:
                hooks_ok = True
                add(Check("hooks installed", "ok", f"{len(cx.EVENTS)} events in {source}"))
    except SpoolError as exc:
        add(Check("hooks installed", "fail", exc.reason, exc.instruction))

    if binary is not None and hooks_ok:
        try:
            with cx.AppServer(binary, home) as server:
                listing = server.list_hooks(project)
            mine = cx.spool_listed(listing, project, source=source)
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
    if ws.running:
        add(Check("worker", "ok", f"running (pid {ws.pid})" if ws.pid else "running"))
    elif os.environ.get("SPOOL_NO_AUTOSTART", "") not in ("", "0"):
        add(Check("worker", "warn", "not running, and SPOOL_NO_AUTOSTART is set so hooks will "
                  "not start it", "Run `spool worker` (or unset SPOOL_NO_AUTOSTART)."))
    else:
        add(Check("worker", "warn", "not running (the hooks start it on the next Codex event)",
                  "Run `spool worker` to start it now."))

    try:
        names, known = configured_sinks(project)
        for s in known.values():
            s.close()
        add(Check("sinks", "ok", ", ".join(names)))
    except SpoolError as exc:
        add(Check("sinks", "fail", exc.reason, exc.instruction))
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



def _missing_part(command: str) -> str:
    """What of a hook command does not exist ("interpreter /x/python", "script
    /x/hook.py"), or "" when it can run."""
    import shlex

    try:
        argv = shlex.split(command)
    except ValueError:
        return f"command {command!r}"
    if not argv:
        return "command (empty)"
    if not os.access(argv[0], os.X_OK):
        return f"interpreter {argv[0]}"
    for a in argv[1:]:
        if a.endswith("hook.py") and not Path(a).is_file():
            return f"script {a}"
    return ""


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
@friendly
def doctor(
    online: bool = typer.Option(False, "--online", help="Also check that the sink answers."),
    as_json: bool = typer.Option(False, "--json", help='Print {"ok": bool, "checks": [...]}.'),
    codex_home_opt: Optional[Path] = typer.Option(
        None, "--codex-home", metavar="DIR", help="Codex home (default: what `spool init` "
        "was given, else CODEX_HOME or ~/.codex)."),
    codex_bin: Optional[str] = typer.Option(
        None, "--codex-bin", metavar="PATH", help="The codex binary (default: what `spool "
        "init` was given, else codex on PATH)."),
    project_opt: Optional[Path] = typer.Option(None, "--project", metavar="DIR"),
) -> None:
    """Check that Codex will really run spool's hooks here, and that traces can go out.

    Exit status 1 if any check fails (warnings do not count).  --json keys per
    check: name, status (ok|warn|fail), detail, fix.
    """
    from .. import codex as cx

    project = project_dir(project_opt, walk_up=True)
    codex_home_opt, codex_bin = remembered_codex(project, codex_home_opt, codex_bin)
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
