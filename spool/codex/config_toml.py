"""``$CODEX_HOME/config.toml`` (CODEX_HOME env, default ``~/.codex``): the
``[features] hooks`` flag, a project's trust level, and spool's ``hooks.state``
trust entries - edited with tomlkit so comments and formatting survive."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from ..errors import SpoolError
from .hooks_json import write_codex_file


def codex_home(override: str | Path | None = None) -> Path:
    """``--codex-home``, else ``$CODEX_HOME``, else ``~/.codex``."""
    if override:
        return Path(override).expanduser().resolve()
    env = os.environ.get("CODEX_HOME")
    if env:
        return Path(env).expanduser().resolve()
    return (Path.home() / ".codex").resolve()


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
    write_codex_file(path, text, 0o600)
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
        write_codex_file(path, text, 0o600)
    return removed
