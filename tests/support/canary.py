"""The canary secret: every test that needs an agent secret uses it, and after the whole
session conftest.pytest_sessionfinish greps every file under pytest's basetemp (every test's
spool home, projects, logs, overflow files) for it and fails the run if it is found."""
from __future__ import annotations

import os
from pathlib import Path

CANARY_SECRET = "sk-spool-canary-7f3a9c1e5b2d4f60a8e1"


def canary_leaks(root: Path, canary: bytes = CANARY_SECRET.encode()) -> list[Path]:
    """Files under ``root`` whose bytes contain ``canary`` (symlinks not followed)."""
    found = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            try:
                if p.is_symlink() or not p.is_file():
                    continue
                with open(p, "rb") as fh:
                    if canary in fh.read():
                        found.append(p)
            except OSError:
                continue
    return found
