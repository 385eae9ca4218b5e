"""Writing a file atomically: readers see the old content or the new, never half.

Every spool file written whole goes through ``write_atomic``: the trace files
of the file sink, ``.spool/config.json``, Codex's ``hooks.json``/``config.toml``
edits, the trimmed hook error log.  (spool/hook.py writes its overflow files
itself: it imports the standard library only.)
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> Path:
    """Write ``data`` to ``path`` with permissions ``mode``: a temporary file in
    the same directory, fsynced, renamed over ``path``, then the directory
    fsynced (best effort).  The directory must exist; on failure nothing is
    left behind and ``path`` is untouched."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path
