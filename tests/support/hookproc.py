"""The hook exactly as `spool init` installs it, run as a real subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HOOK_PATH = Path(__file__).resolve().parent.parent.parent / "spool" / "hook.py"


def hook_cmd() -> list[str]:
    """The hook exactly as `spool init` writes it into hooks.json."""
    return [sys.executable, "-I", "-S", str(HOOK_PATH)]



def run_hook(payload: bytes, *, cwd: Path | str | None = None, env: dict | None = None,
             timeout: float = 30) -> subprocess.CompletedProcess:
    """Run the real hook process with ``payload`` on stdin."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    return subprocess.run(hook_cmd(), input=payload, capture_output=True, cwd=cwd,
                          env=full_env, timeout=timeout)
