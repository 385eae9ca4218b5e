"""`spool init`: set spool up for a project.

``spool init`` leaves a project whose hooks really run under Codex 0.169:

1. finds Codex (``--codex-bin`` or PATH).  If it is missing, init changes
   nothing and says how to install it: hooks written without the trust step
   would be skipped silently by Codex, which is the failure spool exists to
   avoid;
2. validates ``.codex/hooks.json`` and ``$CODEX_HOME/config.toml`` before
   writing anything (a malformed file is an error and stays untouched);
3. writes ``.spool/config.json`` (0600, never the secret) and creates the
   spool database;
4. merges spool's hook into every event of ``<project>/.codex/hooks.json`` - or,
   with ``--user``, of ``$CODEX_HOME/hooks.json`` (every project; nothing with a
   machine-specific path lands in the project, and spool's project hooks are
   taken out so no event is recorded twice);
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

import os
from pathlib import Path
from typing import Optional

import typer

from ..app import app, friendly
from ..errors import SpoolError, UsageError
from .context import project_dir, remembered_codex
from .output import report

GRANULARITY_HELP = "turn: one trace per turn; session: one per session; both."


def _is_git_repo(project: Path) -> bool:
    return any((d / ".git").exists() for d in (project, *project.parents))


GITIGNORE_LINES = {".spool", ".spool/", "/.spool", "/.spool/", ".spool/*", "/.spool/*"}


def _gitignored(project: Path) -> bool:
    try:
        lines = (project / ".gitignore").read_text("utf-8").splitlines()
    except (FileNotFoundError, UnicodeDecodeError):
        return False
    return any(ln.strip() in GITIGNORE_LINES for ln in lines)



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
@friendly
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
    user_level: Optional[bool] = typer.Option(
        None, "--user/--project-hooks",
        help="--user: install spool's hooks once for every project in $CODEX_HOME/hooks.json "
             "(nothing machine-specific lands in the project, no project trust needed); "
             "--project-hooks: in the project's .codex/hooks.json. Default: as last time, "
             "else the project."),
    gitignore: Optional[bool] = typer.Option(None, "--gitignore/--no-gitignore",
                                             help="Add .spool/ to .gitignore (default: ask; yes "
                                                  "with --no-interactive in a git repository)."),
) -> None:
    """Set spool up for a project: config, Codex hooks, and Codex trust so they really run."""
    from .. import codex as cx
    from .. import config, credentials, db

    # 0. A malformed option value is a usage error (exit 2), before anything else.
    if granularity is not None and granularity not in config.GRANULARITIES:
        raise UsageError(f"--granularity {granularity!r} is not one of "
                         f"{', '.join(config.GRANULARITIES)}.", "Pass turn, session or both.")
    if base_url is not None:
        base_url = config.check_base_url(base_url, "--base-url", usage=True)
    interactive = not no_interactive
    project = project_dir(project_opt, walk_up=False)
    codex_home_opt, codex_bin = remembered_codex(project, codex_home_opt, codex_bin)
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
    old_meta = old_cfg.get("codex") if isinstance(old_cfg.get("codex"), dict) else {}
    if user_level is None:
        user_level = old_meta.get("hooks") == "user"
    target = cx.user_hooks_path(home) if user_level else hooks_file
    if user_level:
        cx.read_hooks(target)  # malformed -> error before any write

    # 3. Project config.
    agent = agent_id or os.environ.get("INFINIUM_AGENT_ID") or old_cfg.get("agent_id")
    if not agent and interactive and not old_cfg:  # a re-run keeps the answer (the note says how)
        agent = typer.prompt("Infinium agent id (empty: keep traces in local files)",
                             default="", show_default=False).strip() or None
    env_secret = os.environ.get(credentials.ENV_SECRET)
    if agent and not env_secret and (agent_secret or interactive):
        credentials.require_keyring()  # before the prompt and before any write
    new_cfg = dict(old_cfg)
    if agent:
        new_cfg["agent_id"] = agent
    if base_url:
        new_cfg["base_url"] = credentials.normalize_base_url(base_url)
    new_cfg["granularity"] = granularity or old_cfg.get("granularity") or "turn"
    codex_meta = dict(old_cfg.get("codex") or {})
    if existing_hooks is None and "hooks_json_created" not in codex_meta and not user_level:
        codex_meta["hooks_json_created"] = True
    codex_meta.setdefault("hooks_json_created", False)
    if user_level:
        codex_meta["hooks"] = "user"
    else:
        codex_meta.pop("hooks", None)
    # Remembered for `spool doctor` / `spool uninstall` (paths only, never a secret).
    if codex_home_opt is not None:
        codex_meta["codex_home"] = str(home)
    if codex_bin is not None:
        codex_meta["codex_bin"] = str(binary)
    new_cfg["codex"] = codex_meta
    if new_cfg != old_cfg:
        config.write_file(project, new_cfg)
        done.append(f"wrote {config.config_path(project)}")
    db.open_db().dispose()
    if base_url:  # the user chose this URL: the env secret may go there for this project
        credentials.approve_base_url(None, project, new_cfg["base_url"])

    # 4. hooks.json: the project's, or with --user the user layer's (and then none of
    # spool's in the project's: both would record every event twice).
    command = cx.hook_command()
    change = cx.install_hooks(project, command, path=target)
    if change.changed:
        done.append(f"{'updated' if change.existed else 'created'} {change.path} "
                    f"(spool's hook on {len(cx.EVENTS)} events)")
    if user_level:
        removal = cx.uninstall_hooks(project, delete_if_empty=bool(
            codex_meta.get("hooks_json_created")))
        if removal.removed:
            cx.remove_trust_entries(home, removal.removed_keys, removal.moved_keys)
            done.append(f"took spool's hooks out of {hooks_file} (they run from "
                        f"{target} now)")

    # 5. Feature flag.
    if cx.ensure_feature_flag(home):
        done.append(f"set [features] hooks = true in {cx.config_toml(home)}")

    # 6. Trust: the project, then spool's own hooks.
    trusted_project = cx.project_trust(home, project) == "trusted"
    vt = cx.version_tuple(version)
    needs_trust = vt is None or vt >= cx.MIN_HOOK_TRUST_VERSION
    untrusted_left = 0
    if not trusted_project and not no_trust_project and interactive and not user_level:
        no_trust_project = not typer.confirm(
            f"Trust {project} in Codex? Codex only runs a project's hooks (and loads its "
            ".codex/ config and exec policies) once the project is trusted.", default=True)
    with_server = needs_trust and (trusted_project or not no_trust_project or user_level)
    if not needs_trust:
        notes.append(f"Codex {version} predates hook trust: nothing to trust.")
    if with_server:
        with cx.AppServer(binary, home) as server:
            if not trusted_project and not user_level:
                server.trust_project(project)
                trusted_project = True
                done.append(f"trusted the project {project} in Codex")
            result = cx.trust_spool_hooks(server, project, command, source=target)
        if result.newly_trusted:
            done.append(f"trusted spool's {len(result.newly_trusted)} hooks in Codex "
                        "(other hooks left as they were)")
        untrusted_left = len(result.untrusted_after)
        if result.listed == 0:
            untrusted_left = len(cx.EVENTS)
    if not trusted_project and not user_level:
        notes.append(f"The project is not trusted in Codex, so Codex will NOT run spool's hooks "
                     f"(nor any hook in {hooks_file}). Run `spool init` again and accept, or "
                     "trust the project in Codex.")

    # 7. Secret.
    secret_error: SpoolError | None = None
    secret = agent_secret
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
        try:
            credentials.require_keyring()
            notes.append("No agent secret yet: traces are held until you run "
                         "`spool update-credentials` (or set INFINIUM_AGENT_SECRET).")
        except SpoolError:  # update-credentials could not store it either
            notes.append("No agent secret yet: traces are held until you set "
                         f"{credentials.ENV_SECRET} where you run Codex (there is no OS "
                         "keyring here to store it in).")
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

    report(f"spool init: {project} (Codex {version} at {binary}, CODEX_HOME {home})", done,
            "Nothing to change: spool was already set up here.")
    for line in notes:
        typer.echo(f"  note: {line}")
    if untrusted_left:
        raise SpoolError(f"{untrusted_left} of spool's hooks are still not trusted by Codex.",
                         "Run `spool doctor` to see which, then `spool init` again.")
    if secret_error is not None:
        raise secret_error
    if (trusted_project or user_level) and needs_trust:
        where = "every project" if user_level else "this project"
        typer.echo(f"Codex will now run spool's hooks in {where}. Check with `spool doctor`.")


def _stored_secret(agent: str, cfg: dict) -> object | None:
    """The stored credentials for this agent (None if none or no keyring)."""
    from .. import config, credentials

    try:
        c = config._from_mapping(config.Config(), {k: v for k, v in cfg.items() if k != "codex"})
        return credentials.resolve(c, env={})
    except SpoolError:
        return None
