"""The ATIF sink: each Codex session as one ATIF trajectory file, kept up to date.

``<dir>/<session_id>.json``, where dir is ``SPOOL_ATIF_DIR`` (default
``SPOOL_HOME/atif``, created 0700).  Every trace row of a session (a turn, a
newer revision, the session summary) rewrites the session's file from the
latest revision of each of the session's traces in the database, so the file
always holds everything spool knows of the session, whichever row arrives
first or is retried.  Writes are atomic (temporary file, fsync, rename; 0600).
A row without a session (``spool test``) is rendered from its own body.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from .. import atif, export, paths
from ..retry import Outcome
from .base import Sink, TraceRow
from .file import SAFE_ID, write_atomic


class AtifSink(Sink):
    name = "atif"

    def __init__(self, directory: Path | str | None = None, *,
                 env: Mapping[str, str] | None = None) -> None:
        self._fixed = Path(directory) if directory is not None else None
        self._env = env
        self._engine = None

    def _getenv(self, key: str) -> str | None:
        return (os.environ if self._env is None else self._env).get(key)

    def _home(self) -> Path:
        home = self._getenv("SPOOL_HOME")
        return Path(home).expanduser() if home else paths.spool_home()

    def directory(self) -> Path:
        if self._fixed is not None:
            return self._fixed
        d = self._getenv("SPOOL_ATIF_DIR")
        return Path(d).expanduser() if d else self._home() / "atif"

    def engine(self):
        if self._engine is None:
            from .. import db

            self._engine = db.open_db(self._home())
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    @staticmethod
    def file_name(row: TraceRow) -> str:
        return f"{row.session_id or row.body.get('session_id') or row.trace_id}.json"

    def render(self, row: TraceRow) -> bytes:
        sid = row.session_id or row.body.get("session_id")
        if sid and row.kind in ("turn", "session"):
            doc = export.atif_document(self.engine(), sid, env=self._env)
        else:
            doc = atif.render(atif.Session(session_id=sid or row.trace_id,
                                           bodies=[{"trace_id": row.trace_id, **row.body}]))
        return export.dumps(doc)

    def send(self, row: TraceRow, payload: bytes) -> Outcome:
        name = self.file_name(row)
        if not SAFE_ID.match(name[:-5]):
            return Outcome(kind="dead", error_class="BadSessionId",
                           message=f"session id {name[:-5]!r} is not a safe file name",
                           attempted=False)
        try:
            path = write_atomic(self.directory(), name, payload)
        except OSError as exc:
            return Outcome(error_class=type(exc).__name__, message=str(exc))
        return Outcome(kind="sent", response_id=str(path))
