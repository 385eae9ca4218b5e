"""What ``spool run -- codex …`` passes to Codex (pure: no I/O, no clock).

Codex (>= 0.129) accepts hooks as ``-c`` config overrides: ``features.hooks=true``,
``hooks.<Event>=[…]`` inline, and ``hooks.state={…}`` trust entries for them.
Such hooks live in the "session flags" config layer, whose trust key is
``/<session-flags>/config.toml:<event_snake>:<group>:<handler>``, and run with
no file written anywhere.  The trusted hash is Codex's own rule:

    "sha256:" + hex sha256 of the compact JSON (keys sorted, non-ASCII kept) of
    {"event_name": <snake>, "matcher": <only if set>,
     "hooks": [{"type": "command", "command": …, "timeout": <s>, "async": <bool>}]}

Mid-turn events run ``"async": true`` (spool.codex.hooks_json.ASYNC_EVENTS),
except in a run that keeps no rollout (``keeps_rollout``).

SessionEnd and Interrupt are hashed with timeout 3 (Codex clamps them; hashed
with more, the hook is "modified" and silently skipped).  tests/test_run.py checks
this rule against ``codex app-server`` ``hooks/list`` ``currentHash``.

Codex does not deduplicate identical hooks across layers, so spool's hooks
already installed in a project's (or the user's) ``hooks.json`` are switched
off for the run with ``hooks.state."<key>".enabled=false`` (``disabled_keys``):
the run's own hooks then record every event exactly once, whatever the state
(trusted, modified, untrusted) of the installed ones.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Iterable

from .codex import (CLAMPED_EVENTS, CLAMPED_TIMEOUT_S, EVENTS, MIN_HOOK_TRUST_VERSION,
                    snake, spool_group, spool_positions, version_tuple)

SESSION_FLAGS_SOURCE = "/<session-flags>/config.toml"
DEFAULT_TIMEOUT_S = 600  # what Codex hashes when a handler names no timeout


def trust_key(event: str, group: int = 0, handler: int = 0,
              source: str = SESSION_FLAGS_SOURCE) -> str:
    return f"{source}:{snake(event)}:{group}:{handler}"


def hook_hash(event: str, group: dict) -> str:
    """Codex's trusted hash of one handler group (with one command handler)."""
    handlers = []
    for h in group.get("hooks", []):
        timeout = h.get("timeout", DEFAULT_TIMEOUT_S)
        if event in CLAMPED_EVENTS:
            timeout = min(timeout, CLAMPED_TIMEOUT_S)
        handlers.append({"type": h.get("type", "command"), "command": h["command"],
                         "timeout": timeout, "async": bool(h.get("async", False))})
    doc: dict = {"event_name": snake(event), "hooks": handlers}
    if group.get("matcher") is not None:
        doc["matcher"] = group["matcher"]
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- TOML inline values (what `-c key=value` parses) --------------------------------

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def toml_value(value: object) -> str:
    """A TOML inline value: str, bool, int, list, dict (inline table)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        # JSON's escapes (\" \\ \n \t \uXXXX …) are all valid in a TOML basic string.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key, ensure_ascii=False)


# --- the override list ------------------------------------------------------------

def run_hooks(command: str, events: Iterable[str] = EVENTS,
              async_ok: bool = True) -> dict[str, dict]:
    """{event: handler group} for spool's hook on every event (same as `spool init`)."""
    return {e: spool_group(e, command, async_ok) for e in events}


def trust_entries(groups: dict[str, dict]) -> dict[str, str]:
    """{session-flags trust key: hash} for the groups passed as overrides."""
    return {trust_key(e): hook_hash(e, g) for e, g in groups.items()}


def installed_keys(hooks_files: Iterable[tuple[Path, dict | None]]) -> list[str]:
    """Trust keys of spool's handlers in these (resolved path, parsed hooks.json) files."""
    return [trust_key(event, gi, hi, source=str(path)) for path, data in hooks_files
            for event, gi, hi, _cmd in spool_positions(data)]


def overrides(command: str, disabled: Iterable[str] = (), async_ok: bool = True) -> list[str]:
    """The ``-c`` arguments (flag and value pairs) that run spool's hooks for one run.

    ``disabled``: trust keys of spool hooks installed elsewhere, turned off for
    the run so no event is recorded twice.  ``async_ok=False``: every hook
    synchronous (a run that keeps no rollout, see ``keeps_rollout``).
    """
    groups = run_hooks(command, async_ok=async_ok)
    state: dict[str, dict] = {k: {"trusted_hash": h} for k, h in trust_entries(groups).items()}
    for key in disabled:
        state[key] = {"enabled": False}
    args = ["-c", "features.hooks=true"]
    for event, group in groups.items():
        args += ["-c", f"hooks.{event}={toml_value([group])}"]
    args += ["-c", f"hooks.state={toml_value(state)}"]
    return args


# --- the command line -----------------------------------------------------------------

def split_codex(argv: list[str]) -> tuple[str | None, list[str]]:
    """``[codex|/path/to/codex] ARGS…`` -> (binary or None for "find codex", ARGS).

    The first word is taken as the binary when it is ``codex`` or names a file
    path (contains a slash) ending in ``codex``; otherwise every word is an
    argument for the ``codex`` found on PATH.
    """
    if not argv:
        return None, []
    first = argv[0]
    name = first.replace("\\", "/").rsplit("/", 1)[-1]
    if first == "codex":
        return None, argv[1:]
    if "/" in first.replace("\\", "/") and name.startswith("codex"):
        return first, argv[1:]
    return None, list(argv)


def keeps_rollout(args: list[str]) -> bool:
    """Will Codex write a rollout file for this run?  ``--ephemeral`` keeps none
    (``transcript_path`` is then null): with nothing to reconcile against, the
    mid-turn hooks must stay synchronous."""
    for a in args:
        if a == "--":
            break
        if a == "--ephemeral":
            return False
    return True


def with_overrides(args: list[str], extra: list[str]) -> list[str]:
    """``extra`` placed first: Codex takes ``-c`` only before a subcommand, and a
    global option before the subcommand is valid for the TUI, ``exec`` and the rest."""
    return [*extra, *args]


def too_old(version: str | None) -> bool:
    v = version_tuple(version)
    return v is None or v < MIN_HOOK_TRUST_VERSION


def fallback_dirs(env: dict, home: Path) -> list[Path]:
    """Where npm-global and Homebrew put ``codex`` when it is not on PATH (in order)."""
    dirs = []
    for name in ("NPM_CONFIG_PREFIX", "npm_config_prefix"):
        if env.get(name):
            dirs.append(Path(env[name]).expanduser() / "bin")
    dirs += [home / ".npm-global" / "bin", home / ".local" / "bin", home / ".volta" / "bin",
             home / ".local" / "share" / "pnpm", Path("/opt/homebrew/bin"), Path("/usr/local/bin"),
             Path("/home/linuxbrew/.linuxbrew/bin"), home / ".linuxbrew" / "bin"]
    return dirs


def codex_cwd(args: list[str], cwd: Path) -> Path:
    """The directory Codex will work in: ``-C DIR``/``--cd DIR`` if given, else ``cwd``."""
    for i, a in enumerate(args):
        if a in ("-C", "--cd") and i + 1 < len(args):
            return (cwd / args[i + 1]).resolve()
        if a.startswith("--cd="):
            return (cwd / a[5:]).resolve()
        if a == "--":
            break
    return cwd


def env_for_run(base: dict, *, sinks: list[str] | None, otlp_endpoint: str | None,
                run_id: str | None, configured: tuple[str, ...] = ()) -> dict:
    """Codex's environment (inherited by the hooks and the worker they start).

    ``--otlp-endpoint`` adds the otlp sink to ``--sink`` (or, without it, to the
    ``configured`` sinks of the project)."""
    env = dict(base)
    names = [s.strip() for part in (sinks or []) for s in part.split(",") if s.strip()]
    if otlp_endpoint:
        names = names or list(configured)
        env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = otlp_endpoint
        if "otlp" not in names:
            names.append("otlp")
    if names:
        env["SPOOL_SINKS"] = ",".join(dict.fromkeys(names))
    if run_id:
        env["SPOOL_RUN_ID"] = run_id
    return env
