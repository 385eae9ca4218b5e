"""Trusting spool's own hooks - never another tool's - through ``codex app-server``:
``hooks/list``, then ``hooks.state`` upserts for spool's untrusted handlers, then
a re-check.  (Codex computes each handler's hash over command, timeout and
matcher and reports it as ``currentHash``; spool never computes it.)"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .app_server import AppServer
from .hooks_json import hooks_path, is_spool_command


def spool_listed(listing: dict, project: Path, command: str | None = None,
                 source: Path | None = None) -> list[dict]:
    """The entries of a hooks/list answer that are spool's, from this project's file
    (or from the hooks.json at ``source``, e.g. the user layer's).

    With ``command``, only handlers running exactly that command (what trust
    is granted to); without it, any spool hook command (what doctor reports).
    """
    want = Path(source or hooks_path(project)).resolve()
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


def trust_spool_hooks(server: AppServer, project: Path, command: str,
                      source: Path | None = None) -> TrustResult:
    """Trust spool's own hooks (exact command, this project's file or ``source``) and
    re-check."""
    listing = server.list_hooks(project)
    mine = spool_listed(listing, project, command, source)
    todo = {h["key"]: h["currentHash"] for h in mine
            if h.get("trustStatus") not in ("trusted", "managed") and h.get("currentHash")}
    server.trust_hooks(todo)
    after = spool_listed(server.list_hooks(project), project, command, source) if todo else mine
    untrusted = [h["key"] for h in after if h.get("trustStatus") not in ("trusted", "managed")]
    return TrustResult(len(after), sorted(todo), untrusted, list(listing.get("warnings", [])))
