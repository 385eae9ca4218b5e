"""Install the pinned ccusage CLI from npm into a cache directory (if absent).

Prints the path of the `ccusage` binary.  Used by scripts/test.sh, the cost
acceptance test (tests/test_usage_e2e.py) and scripts/bench_usage.py.  Pinned
to 20.0.24: 20.0.26's native binary package is not published for linux-x64.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

CCUSAGE_VERSION = "20.0.24"


def cache_dir() -> Path:
    base = os.environ.get("SPOOL_CCUSAGE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "spool-ccusage")
    return Path(base) / CCUSAGE_VERSION


def ccusage_bin() -> Path:
    return cache_dir() / "node_modules" / ".bin" / "ccusage"


def installed_version(binary: Path) -> str | None:
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    words = out.stdout.strip().split()
    return words[-1].lstrip("v") if out.returncode == 0 and words else None


def ensure_ccusage() -> Path:
    binary = ccusage_bin()
    if binary.exists() and installed_version(binary) == CCUSAGE_VERSION:
        return binary
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("npm not found: install Node.js and npm to run the cost acceptance test.")
    cache_dir().mkdir(parents=True, exist_ok=True)
    subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(cache_dir()),
                    f"ccusage@{CCUSAGE_VERSION}"], check=True, stdout=sys.stderr)
    if installed_version(binary) != CCUSAGE_VERSION:
        raise SystemExit(f"ccusage {CCUSAGE_VERSION} did not install at {binary}.")
    return binary


if __name__ == "__main__":
    print(ensure_ccusage())
