"""The installed `spool` console script run as a user runs it, and its one-line errors."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SPOOL = str(Path(sys.executable).parent / "spool")


def run_spool(*args, cwd=None, env=None, timeout=60, input=None) -> subprocess.CompletedProcess:
    """`spool ARGS` in ``cwd``, 80 columns, no worker autostart; ``env`` values of None unset."""
    full = {**os.environ, "COLUMNS": "80", "SPOOL_NO_AUTOSTART": "1", **(env or {})}
    full = {k: v for k, v in full.items() if v is not None}
    return subprocess.run([SPOOL, *args], capture_output=True, text=True, cwd=cwd, env=full,
                          timeout=timeout, input=input)


def one_line_error(res: subprocess.CompletedProcess, code: int) -> str:
    """The one stderr line of a refused command (asserting the exit code and no traceback)."""
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    return lines[0]
