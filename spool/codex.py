"""Everything spool knows about the Codex CLI's own files and processes.

* the ``codex`` binary (``--codex-bin`` or PATH) and its version;
* ``<project>/.codex/hooks.json``: merging spool's hook into every event and
  taking it out again, preserving every other hook (a malformed file is an
  error and is left untouched);
* ``$CODEX_HOME/config.toml`` (CODEX_HOME env, default ``~/.codex``): the
  ``[features] hooks = true`` flag and removing spool's ``hooks.state`` trust
  entries, edited with tomlkit so comments and formatting survive;
* a small JSON-RPC client for ``codex app-server`` (stdio, one JSON object per
  line, with timeouts) used to trust the project
  (``projects."<path>".trust_level``) and spool's own hooks - never another
  tool's - the way Codex's own review screen does (``hooks/list`` then
  ``config/batchWrite`` on ``hooks.state``).

Facts this relies on (Codex 0.169.0): a project's ``.codex/hooks.json`` is not
loaded until the project is trusted; an untrusted hook is skipped silently;
the trust key is ``<hooks.json path>:<event_snake_case>:<group>:<handler>``
and the hash covers command, timeout and matcher; Codex keeps a ``matcher``
only on the events in MATCHER_EVENTS and clamps SessionEnd/Interrupt timeouts
to 3 s (with a warning when more is asked, so spool asks for 3).
"""
from __future__ import annotations

import json
import os
import queue
import re
import shlex
import shutil
import subprocess
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .errors import SpoolError
from .files import write_atomic

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
HOOK_TIMEOUT_S = 30
CLAMPED_TIMEOUT_S = 3
MIN_HOOK_TRUST_VERSION = (0, 129, 0)  # hooks.state trust exists since 0.129

INSTALL_HINT = ("Install it with `npm install -g @openai/codex` (or pass --codex-bin "
                "/path/to/codex), then run this command again.")
_SPOOL_MARKERS = re.compile(r"(^|[\s/\\'\"])spool[/\\]hook\.py(['\"]|\s|$)|-m\s+spool\.hook(\s|$)")


# --- the hook command -----------------------------------------------------------

def hook_command(python: str | None = None) -> str:
    """What spool writes into hooks.json: ``<python> -I -S <abs path>/spool/hook.py``.

    Isolated mode, no ``site`` import (pth files cost 20-40 ms per event); the
    hook is stdlib-only, so it runs as a plain script without the venv.
    """
    from . import hook

    return shlex.join([python or sys.executable, "-I", "-S", str(Path(hook.__file__).resolve())])


def is_spool_command(command: object) -> bool:
    """Is this hooks.json command spool's hook (any interpreter, any install)?"""
    return isinstance(command, str) and bool(_SPOOL_MARKERS.search(command))


def snake(event: str) -> str:
    """PreToolUse -> pre_tool_use (the form used in trust keys)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", event).lower()


def spool_group(event: str, command: str) -> dict:
    handler = {"type": "command", "command": command,
               "timeout": CLAMPED_TIMEOUT_S if event in CLAMPED_EVENTS else HOOK_TIMEOUT_S}
    group: dict = {"hooks": [handler]}
    if event in MATCHER_EVENTS:
        group = {"matcher": "*", "hooks": [handler]}
    return group


# --- the binary -------------------------------------------------------------------

def find_codex(codex_bin: str | Path | None = None) -> Path:
    """The codex binary: ``codex_bin`` if given, else ``codex`` on PATH."""
    if codex_bin:
        p = Path(codex_bin).expanduser()
        if p.is_file() and os.access(p, os.X_OK):
            return p.absolute()
        found = shutil.which(str(codex_bin))
        if found:
            return Path(found).absolute()
        raise SpoolError(f"the Codex CLI was not found at {codex_bin}.", INSTALL_HINT)
    found = shutil.which("codex")
    if not found:
        raise SpoolError("the Codex CLI (`codex`) was not found on PATH.", INSTALL_HINT)
    return Path(found)


def codex_version(binary: Path, timeout: float = 30) -> str | None:
    """``codex --version`` -> "0.169.0" (None if it cannot be run)."""
    try:
        r = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"(\d+)\.(\d+)\.(\d+)", r.stdout or "")
    return m.group(0) if (r.returncode == 0 and m) else None


def version_tuple(version: str | None) -> tuple[int, int, int] | None:
    m = re.match(r"(\d+)\.(\d+)\.(\d+)", version or "")
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def codex_home(override: str | Path | None = None) -> Path:
    """``--codex-home``, else ``$CODEX_HOME``, else ``~/.codex``."""
    if override:
        return Path(override).expanduser().resolve()
    env = os.environ.get("CODEX_HOME")
    if env:
        return Path(env).expanduser().resolve()
    return (Path.home() / ".codex").resolve()


# --- hooks.json -------------------------------------------------------------------

def hooks_path(project: Path) -> Path:
    return Path(project) / ".codex" / "hooks.json"


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
    out = []
    for event, groups in ((data or {}).get("hooks") or {}).items():
        for gi, g in enumerate(groups):
            for hi, h in enumerate(g.get("hooks", [])):
                if is_spool_command(h.get("command")):
                    out.append((event, gi, hi, h.get("command")))
    return out


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


def _atomic_write(path: Path, text: str, mode: int = 0o644) -> None:
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


def install_hooks(project: Path, command: str | None = None) -> HooksChange:
    """Merge spool's hook into ``<project>/.codex/hooks.json``; writes only on change."""
    path = hooks_path(project)
    data = read_hooks(path)  # raises (file untouched) if malformed
    doc = merge_hooks(data, command or hook_command())
    if data is not None and doc == data:
        return HooksChange(path, True, False)  # already exactly right: leave the bytes alone
    _atomic_write(path, dump_hooks(doc))
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


def uninstall_hooks(project: Path, delete_if_empty: bool) -> HooksRemoval:
    """Take spool's handlers out of hooks.json; other hooks stay exactly as they were."""
    path = hooks_path(project)
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
    _atomic_write(path, dump_hooks(un.doc))
    return HooksRemoval(path, len(un.removed_keys), False, removed_keys, moved)


# --- config.toml ------------------------------------------------------------------

def config_toml(home: Path) -> Path:
    return Path(home) / "config.toml"


def _load_toml(path: Path):
    import tomlkit

    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return tomlkit.document(), None
    try:
        return tomlkit.parse(text), text
    except Exception as exc:  # tomlkit raises its own ParseError subclasses
        raise SpoolError(f"{path} is not valid TOML ({exc}); it was left untouched.",
                         "Fix the file, then run the command again.") from None


def read_toml(home: Path) -> dict:
    """config.toml as plain Python data ({} if absent)."""
    doc, _ = _load_toml(config_toml(home))
    return doc.unwrap()


def feature_flag(home: Path) -> bool | None:
    """``[features] hooks`` (None when not set)."""
    v = (read_toml(home).get("features") or {}).get("hooks")
    return v if isinstance(v, bool) else None


def ensure_feature_flag(home: Path) -> bool:
    """Set ``[features] hooks = true``, keeping the file's formatting.  True if changed."""
    import tomlkit

    path = config_toml(home)
    doc, before = _load_toml(path)
    features = doc.get("features")
    if features is not None and features.get("hooks") is True:
        return False
    if features is None:
        table = tomlkit.table()
        table["hooks"] = True
        doc["features"] = table
    else:
        features["hooks"] = True
    text = tomlkit.dumps(doc)
    if text == before:
        return False
    Path(home).mkdir(mode=0o700, parents=True, exist_ok=True)
    _atomic_write(path, text, 0o600)
    return True


def project_trust(home: Path, project: Path) -> str | None:
    """The trust_level recorded for ``project`` (or the nearest parent recorded)."""
    projects = read_toml(home).get("projects") or {}
    p = Path(project)
    for d in (p, *p.parents):
        entry = projects.get(str(d))
        if isinstance(entry, dict) and entry.get("trust_level"):
            return str(entry["trust_level"])
    return None


def hooks_state(home: Path) -> dict[str, dict]:
    state = ((read_toml(home).get("hooks") or {}).get("state")) or {}
    return state if isinstance(state, dict) else {}


def remove_trust_entries(home: Path, keys: Iterable[str], moved: dict[str, str] | None = None) -> int:
    """Delete ``hooks.state`` entries ``keys``; re-key entries in ``moved`` (old -> new).

    Re-keying keeps another tool's existing trust when removing spool's group
    shifted that tool's group index (its hash does not depend on the index).
    Returns how many entries were removed.  Formatting elsewhere is kept.
    """
    import tomlkit

    path = config_toml(home)
    doc, before = _load_toml(path)
    if before is None:
        return 0
    hooks = doc.get("hooks")
    state = hooks.get("state") if hooks is not None else None
    if state is None:
        return 0
    keys = set(keys)
    moved = dict(moved or {})
    saved = {old: state[old].unwrap() if hasattr(state[old], "unwrap") else state[old]
             for old in moved if old in state}
    removed = 0
    for k in list(state.keys()):
        if k in keys or k in saved:
            del state[k]
            removed += k in keys
    for old, value in saved.items():
        t = tomlkit.table()
        for kk, vv in value.items():
            t[kk] = vv
        state[moved[old]] = t
    if len(state) == 0:
        del hooks["state"]
        if len(hooks) == 0:
            del doc["hooks"]
    text = tomlkit.dumps(doc)
    if text != before:
        _atomic_write(path, text, 0o600)
    return removed


# --- codex app-server (JSON-RPC over stdio) ------------------------------------------

class AppServerError(SpoolError):
    pass


class AppServer:
    """``codex app-server`` as a child process; one JSON object per line each way."""

    def __init__(self, binary: Path, codex_home: Path | None = None, timeout: float = 60,
                 cwd: Path | None = None) -> None:
        self.binary = Path(binary)
        self.timeout = timeout
        env = dict(os.environ)
        if codex_home is not None:
            env["CODEX_HOME"] = str(codex_home)
        env.setdefault("RUST_LOG", "error")
        self._next_id = 0
        self._lines: queue.Queue = queue.Queue()
        self._stderr: deque[str] = deque(maxlen=50)
        try:
            self.proc = subprocess.Popen(
                [str(self.binary), "app-server"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, env=env, cwd=str(cwd) if cwd else None)
        except OSError as exc:
            raise AppServerError(f"cannot start `{binary} app-server`: {exc}.", INSTALL_HINT) from None
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line.decode("utf-8", "replace").rstrip())

    def _send(self, obj: dict) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(obj) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._died() from None

    def _died(self) -> AppServerError:
        tail = " | ".join(list(self._stderr)[-3:])
        return AppServerError(f"`codex app-server` stopped unexpectedly{': ' + tail if tail else ''}.",
                              "Run `codex app-server` by hand to see why, or check --codex-bin.")

    def notify(self, method: str, params: dict | None = None) -> None:
        msg: dict[str, Any] = {"method": method}
        if params is not None:
            msg["params"] = params
        self._send(msg)

    def request(self, method: str, params: dict | None = None, timeout: float | None = None) -> Any:
        """Send a request and wait (with a deadline) for its response's result."""
        import time

        self._next_id += 1
        rid = self._next_id
        msg: dict[str, Any] = {"id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        self._send(msg)
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AppServerError(f"`codex app-server` did not answer {method} in time.",
                                     "Try again; if it persists run `codex app-server` by hand.")
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise self._died()
            try:
                m = json.loads(line)
            except ValueError:
                continue
            if not isinstance(m, dict):
                continue
            if "method" in m and "id" in m:  # a request from the server: we support none
                self._send({"id": m["id"], "error": {"code": -32601, "message": "not supported"}})
                continue
            if m.get("id") != rid:
                continue  # a notification, or a stale response
            if "error" in m:
                err = m["error"] or {}
                raise AppServerError(f"`codex app-server` refused {method}: "
                                     f"{err.get('message', err)}.",
                                     "Check the Codex version (`codex --version`) and config.toml.")
            return m.get("result")

    def initialize(self) -> dict:
        from . import __version__

        result = self.request("initialize", {"clientInfo": {"name": "spool", "title": "spool",
                                                            "version": __version__}})
        self.notify("initialized")
        return result

    def close(self) -> None:
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> "AppServer":
        try:
            self.initialize()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- the calls spool makes -----------------------------------------------------

    def list_hooks(self, project: Path) -> dict:
        """hooks/list for one project: {"hooks": [...], "warnings": [...], "errors": [...]}."""
        result = self.request("hooks/list", {"cwds": [str(project)]}) or {}
        for entry in result.get("data", []):
            return entry
        return {"hooks": [], "warnings": [], "errors": []}

    def batch_write(self, edits: list[dict]) -> dict:
        return self.request("config/batchWrite", {"edits": edits}) or {}

    def trust_project(self, project: Path) -> None:
        self.batch_write([{"keyPath": "projects", "mergeStrategy": "upsert",
                           "value": {str(project): {"trust_level": "trusted"}}}])

    def trust_hooks(self, entries: dict[str, str]) -> None:
        """Upsert ``hooks.state`` {key: {trusted_hash: hash}} for these keys only."""
        if entries:
            self.batch_write([{"keyPath": "hooks.state", "mergeStrategy": "upsert",
                               "value": {k: {"trusted_hash": h} for k, h in entries.items()}}])


def spool_listed(listing: dict, project: Path, command: str | None = None) -> list[dict]:
    """The entries of a hooks/list answer that are spool's, from this project's file.

    With ``command``, only handlers running exactly that command (what trust
    is granted to); without it, any spool hook command (what doctor reports).
    """
    want = hooks_path(project).resolve()
    out = []
    for h in listing.get("hooks", []):
        cmd = h.get("command")
        if command is not None and cmd != command:
            continue
        if not is_spool_command(cmd):
            continue
        src = h.get("sourcePath")
        try:
            if src is None or Path(src).resolve() != want:
                continue
        except OSError:
            continue
        out.append(h)
    return out


@dataclass
class TrustResult:
    listed: int  # spool hooks Codex lists for the project
    newly_trusted: list[str]
    untrusted_after: list[str]
    warnings: list[str]


def trust_spool_hooks(server: AppServer, project: Path, command: str) -> TrustResult:
    """Trust spool's own hooks (exact command, this project's file) and re-check."""
    listing = server.list_hooks(project)
    mine = spool_listed(listing, project, command)
    todo = {h["key"]: h["currentHash"] for h in mine
            if h.get("trustStatus") not in ("trusted", "managed") and h.get("currentHash")}
    server.trust_hooks(todo)
    after = spool_listed(server.list_hooks(project), project, command) if todo else mine
    untrusted = [h["key"] for h in after if h.get("trustStatus") not in ("trusted", "managed")]
    return TrustResult(len(after), sorted(todo), untrusted, list(listing.get("warnings", [])))
