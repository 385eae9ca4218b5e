"""Install the pinned Codex CLI from npm into a cache directory (if absent).

Prints the path of the `codex` binary.  Used by scripts/test.sh and the
end-to-end tests; the version is pinned in one place: CODEX_VERSION.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

CODEX_VERSION = "0.169.0"


def cache_dir() -> Path:
    base = os.environ.get("SPOOL_CODEX_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "spool-codex")
    return Path(base) / CODEX_VERSION


def codex_bin() -> Path:
    return cache_dir() / "node_modules" / ".bin" / "codex"


def installed_version(binary: Path) -> str | None:
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip().split()[-1] if out.returncode == 0 and out.stdout.strip() else None


def ensure_codex() -> Path:
    binary = codex_bin()
    if binary.exists() and installed_version(binary) == CODEX_VERSION:
        return binary
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("npm not found: install Node.js and npm to run the end-to-end tests.")
    cache_dir().mkdir(parents=True, exist_ok=True)
    subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(cache_dir()),
                    f"@openai/codex@{CODEX_VERSION}"], check=True, stdout=sys.stderr)
    if installed_version(binary) != CODEX_VERSION:
        raise SystemExit(f"Codex {CODEX_VERSION} did not install at {binary}.")
    return binary


if __name__ == "__main__":
    print(ensure_codex())
