"""The ``codex`` binary: where it is (``--codex-bin`` or PATH) and its version."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from ..errors import SpoolError

MIN_HOOK_TRUST_VERSION = (0, 129, 0)  # hooks.state trust exists since 0.129

INSTALL_HINT = ("Install it with `npm install -g @openai/codex` (or pass --codex-bin "
                "/path/to/codex), then run this command again.")


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
