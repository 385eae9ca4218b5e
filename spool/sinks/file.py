"""The file sink: each trace as ``<dir>/<trace_id>.json``.

The default sink when no Infinium agent id is configured, so a machine without
an account never has stuck traces, and ``spool demo`` has a destination.
The directory is the project's ``file_sink_dir`` (SPOOL_FILE_SINK_DIR), by
default ``SPOOL_HOME/traces`` (created 0700).  Writes are atomic (temporary
file, fsync, rename; 0600), named by trace id: a resend overwrites the same
file with the same content.  The file holds the neutral trace model
(``traces.body``) plus the trace id, redacted unless the project turns redaction
off (bodies are redacted when built; this covers bodies stored before that).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Mapping

from .. import config, files, paths
from ..redact import redact
from ..retry import Outcome
from .base import Sink, TraceRow

SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")


class FileSink(Sink):
    name = "file"

    def __init__(self, directory: Path | str | None = None, *,
                 env: Mapping[str, str] | None = None) -> None:
        self._fixed = Path(directory) if directory is not None else None
        self._env = env
        self._dirs: dict[str | None, Path] = {}
        self._redact: dict[str | None, bool] = {}

    def reset(self) -> None:
        self._dirs.clear()
        self._redact.clear()

    def directory_for(self, row: TraceRow) -> Path:
        if self._fixed is not None:
            return self._fixed
        d = self._dirs.get(row.project)
        if d is None:
            cfg = config.load(row.project, env=self._env)
            home = paths.spool_home() if self._env is None else Path(
                self._env.get("SPOOL_HOME") or paths.spool_home())
            d = cfg.file_sink_dir or (home / "traces")
            self._dirs[row.project] = d
        return d

    def render(self, row: TraceRow) -> bytes:
        on = self._redact.get(row.project)
        if on is None:
            on = self._redact[row.project] = config.load(row.project, env=self._env).redact
        doc = {"trace_id": row.trace_id, **(redact(dict(row.body)) if on else dict(row.body))}
        return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()

    def send(self, row: TraceRow, payload: bytes) -> Outcome:
        if not SAFE_ID.match(row.trace_id):
            return Outcome(kind="dead", error_class="BadTraceId",
                           message=f"trace id {row.trace_id!r} is not a safe file name",
                           attempted=False)
        try:
            directory = self.directory_for(row)
            path = write_atomic(directory, f"{row.trace_id}.json", payload)
        except OSError as exc:
            return Outcome(error_class=type(exc).__name__, message=str(exc))
        return Outcome(kind="sent", response_id=str(path))


def write_atomic(directory: Path, name: str, data: bytes) -> Path:
    """Write ``directory/name`` atomically, 0600 (directory created 0700)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    return files.write_atomic(directory / name, data)
