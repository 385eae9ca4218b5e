"""``<project>/.codex/hooks.json``: spool's hook command, merged into every
event and taken out again, every other hook preserved (a malformed file is an
error and is left untouched).

Codex 0.169.0 keeps a ``matcher`` only on the events in MATCHER_EVENTS and
clamps SessionEnd/Interrupt timeouts to 3 s (with a warning when more is asked,
so spool asks for 3).  A handler's trust key is
``<hooks.json path>:<event_snake_case>:<group>:<handler>`` (``trust_key``).
"""
from __future__ import annotations

import json
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ..errors import SpoolError
from ..files import write_atomic

EVENTS = (
    "SessionStart", "UserPromptSubmit", "PreModelRequest", "PostModelRequest", "PreToolUse",
    "PermissionRequest", "PostToolUse", "PreCompact", "PostCompact", "SubagentStart",
    "SubagentStop", "Stop", "SessionEnd", "Interrupt",
)
# Events whose matcher Codex 0.169.0 keeps (it drops the matcher on the others).
MATCHER_EVENTS = frozenset({
    "SessionStart", "SessionEnd", "PreToolUse", "PermissionRequest", "PostToolUse",
    "PreCompact", "PostCompact", "SubagentStart", "SubagentStop",
})
CLAMPED_EVENTS = frozenset({"SessionEnd", "Interrupt"})  # Codex clamps these to 3 s
# Mid-turn events run ``"async": true``: the turn does not wait for their hook.
# Everything they carry is also in the rollout (token_usage_record,
# item_completed), and the aggregator fills in from it what a lost one would
# have said (spool.reconcile).  Lifecycle events stay synchronous.
ASYNC_EVENTS = frozenset({"PreModelRequest", "PostModelRequest", "PreToolUse", "PostToolUse"})
HOOK_TIMEOUT_S = 30
CLAMPED_TIMEOUT_S = 3
_SPOOL_MARKERS = re.compile(r"(^|[\s/\\'\"])spool[/\\]hook\.py(['\"]|\s|$)|-m\s+spool\.hook(\s|$)")


# --- the hook command -----------------------------------------------------------

def hook_command(python: str | None = None) -> str:
    """What spool writes into hooks.json: ``<python> -I -S <abs path>/spool/hook.py``.

    Isolated mode, no ``site`` import (pth files cost 20-40 ms per event); the
    hook is stdlib-only, so it runs as a plain script without the venv.
    """
    from .. import hook

    return shlex.join([python or sys.executable, "-I", "-S", str(Path(hook.__file__).resolve())])


def is_spool_command(command: object) -> bool:
    """Is this hooks.json command spool's hook (any interpreter, any install)?"""
    return isinstance(command, str) and bool(_SPOOL_MARKERS.search(command))


def snake(event: str) -> str:
    """PreToolUse -> pre_tool_use (the form used in trust keys)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", event).lower()


def spool_group(event: str, command: str, async_ok: bool = True) -> dict:
    """spool's handler group for ``event``; ``async_ok=False``: every event synchronous
    (when Codex keeps no rollout to reconcile against)."""
    handler: dict = {"type": "command", "command": command,
                     "timeout": CLAMPED_TIMEOUT_S if event in CLAMPED_EVENTS else HOOK_TIMEOUT_S}
    if async_ok and event in ASYNC_EVENTS:
        handler["async"] = True
    group: dict = {"hooks": [handler]}
    if event in MATCHER_EVENTS:
        group = {"matcher": "*", "hooks": [handler]}
    return group


# --- hooks.json -------------------------------------------------------------------

def hooks_path(project: Path) -> Path:
    return Path(project) / ".codex" / "hooks.json"


def user_hooks_path(codex_home: Path) -> Path:
    """The user layer's hooks.json (``$CODEX_HOME/hooks.json``): hooks for every
    project, outside any repository (``spool init --user``)."""
    return Path(codex_home) / "hooks.json"


def _validate(data: object, path: Path) -> dict:
    fix = f"Fix {path} by hand (it must be {{\"hooks\": {{\"Event\": [{{\"hooks\": [...]}}]}}}}), then run again."
    if not isinstance(data, dict):
        raise SpoolError(f"{path} is not a JSON object; it was left untouched.", fix)
    hooks = data.get("hooks", {})
    if not isinstance(hooks, dict):
        raise SpoolError(f"{path}: \"hooks\" is not an object; the file was left untouched.", fix)
    for event, groups in hooks.items():
        if not isinstance(groups, list):
            raise SpoolError(f"{path}: hooks.{event} is not a list; the file was left untouched.", fix)
        for g in groups:
            if not isinstance(g, dict) or not isinstance(g.get("hooks", []), list):
                raise SpoolError(f"{path}: a hooks.{event} entry is not "
                                 "{\"hooks\": [...]}; the file was left untouched.", fix)
            for h in g.get("hooks", []):
                if not isinstance(h, dict):
                    raise SpoolError(f"{path}: a hooks.{event} handler is not an object; "
                                     "the file was left untouched.", fix)
    return data


def read_hooks(path: Path) -> dict | None:
    """The parsed hooks.json, None if absent; SpoolError (file untouched) if malformed."""
    try:
        text = Path(path).read_text("utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SpoolError(f"cannot read {path}: {exc}.", "Check its permissions.") from None
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SpoolError(f"{path} is not valid JSON ({exc}); it was left untouched.",
                         "Fix or remove the file, then run the command again.") from None
    return _validate(data, Path(path))


def spool_positions(data: dict | None) -> list[tuple[str, int, int, str]]:
    """(event, group index, handler index, command) of every spool handler."""
    return [(event, gi, hi, h.get("command"))
            for event, groups in ((data or {}).get("hooks") or {}).items()
            for gi, g in enumerate(groups)
            for hi, h in enumerate(g.get("hooks", []))
            if is_spool_command(h.get("command"))]


def merge_hooks(data: dict | None, command: str, events: Iterable[str] = EVENTS) -> dict:
    """A new hooks.json document with spool's hook on every event (pure).

    Another tool's entries are kept exactly, in place.  Spool's own entry is
    replaced where it stands (so re-running with another interpreter path does
    not duplicate it), or appended as the last group of the event (so removing
    it later shifts no one else's trust key).
    """
    doc = json.loads(json.dumps(data)) if data else {}
    hooks = doc.setdefault("hooks", {})
    for event in events:
        want = spool_group(event, command)
        groups = hooks.get(event)
        if groups is None:
            hooks[event] = [want]
            continue
        placed = False
        new_groups = []
        for g in groups:
            handlers = g.get("hooks", [])
            mine = [h for h in handlers if is_spool_command(h.get("command"))]
            if not mine:
                new_groups.append(g)
                continue
            if len(mine) == len(handlers) and not placed:
                new_groups.append(want)  # spool's own group: replace in place
                placed = True
                continue
            rest = [h for h in handlers if not is_spool_command(h.get("command"))]
            if rest:
                new_groups.append({**g, "hooks": rest})
        if not placed:
            new_groups.append(want)
        hooks[event] = new_groups
    return doc


def outdated_events(data: dict | None) -> list[str]:
    """Events whose spool handler is not the current one (e.g. synchronous where
    it now runs async): installed by an older spool; ``spool init`` upgrades them."""
    return [event for event, gi, hi, _cmd in spool_positions(data)
            if bool(data["hooks"][event][gi]["hooks"][hi].get("async", False))
            != (event in ASYNC_EVENTS)]


@dataclass
class Unmerged:
    doc: dict
    removed_keys: list[tuple[str, int, int]]  # (event, group, handler) positions removed
    moved: dict[tuple[str, int, int], tuple[str, int, int]]  # others' old -> new position


def unmerge_hooks(data: dict | None) -> Unmerged:
    """hooks.json without spool's handlers (pure); events it empties are dropped."""
    doc = json.loads(json.dumps(data)) if data else {}
    hooks = doc.get("hooks") or {}
    removed: list[tuple[str, int, int]] = []
    moved: dict[tuple[str, int, int], tuple[str, int, int]] = {}
    for event in list(hooks):
        groups = hooks[event]
        new_groups = []
        touched = False
        for gi, g in enumerate(groups):
            handlers = g.get("hooks", [])
            keep = []
            for hi, h in enumerate(handlers):
                if is_spool_command(h.get("command")):
                    removed.append((event, gi, hi))
                    touched = True
                else:
                    keep.append((hi, h))
            if not keep and handlers:
                continue  # a group that held only spool's handlers goes
            ngi = len(new_groups)
            for nhi, (hi, _h) in enumerate(keep):
                if (ngi, nhi) != (gi, hi):
                    moved[(event, gi, hi)] = (event, ngi, nhi)
            new_groups.append({**g, "hooks": [h for _, h in keep]} if len(keep) != len(handlers) else g)
        if touched and not new_groups:
            del hooks[event]
        else:
            hooks[event] = new_groups
    return Unmerged(doc, removed, moved)


def dump_hooks(doc: dict) -> str:
    return json.dumps(doc, indent=2) + "\n"


def write_codex_file(path: Path, text: str, mode: int = 0o644) -> None:
    """Write a Codex file atomically, keeping the mode it already had."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        pass
    write_atomic(path, text.encode("utf-8"), mode)


@dataclass
class HooksChange:
    path: Path
    existed: bool
    changed: bool


def install_hooks(project: Path, command: str | None = None, *,
                  path: Path | None = None) -> HooksChange:
    """Merge spool's hook into ``<project>/.codex/hooks.json`` (or the hooks.json at
    ``path``); writes only on change."""
    path = path or hooks_path(project)
    data = read_hooks(path)  # raises (file untouched) if malformed
    doc = merge_hooks(data, command or hook_command())
    if data is not None and doc == data:
        return HooksChange(path, True, False)  # already exactly right: leave the bytes alone
    write_codex_file(path, dump_hooks(doc))
    return HooksChange(path, data is not None, True)


def trust_key(path: Path, event: str, group: int, handler: int) -> str:
    return f"{path}:{snake(event)}:{group}:{handler}"


@dataclass
class HooksRemoval:
    path: Path
    removed: int
    deleted_file: bool
    removed_keys: list[str] = field(default_factory=list)
    moved_keys: dict[str, str] = field(default_factory=dict)


def uninstall_hooks(project: Path, delete_if_empty: bool, *,
                    path: Path | None = None) -> HooksRemoval:
    """Take spool's handlers out of hooks.json (the project's, or the one at ``path``);
    other hooks stay exactly as they were."""
    path = path or hooks_path(project)
    data = read_hooks(path)
    if data is None:
        return HooksRemoval(path, 0, False)
    un = unmerge_hooks(data)
    kpath = path.resolve()
    removed_keys = [trust_key(kpath, *pos) for pos in un.removed_keys]
    moved = {trust_key(kpath, *a): trust_key(kpath, *b) for a, b in un.moved.items()}
    if not un.removed_keys:
        return HooksRemoval(path, 0, False)
    remaining = any(un.doc.get("hooks", {}).values())
    others = {k: v for k, v in un.doc.items() if k != "hooks"}
    if delete_if_empty and not remaining and not others:
        path.unlink()
        try:
            path.parent.rmdir()  # only if empty
        except OSError:
            pass
        return HooksRemoval(path, len(un.removed_keys), True, removed_keys, moved)
    write_codex_file(path, dump_hooks(un.doc))
    return HooksRemoval(path, len(un.removed_keys), False, removed_keys, moved)
