"""Install a pinned npm tool into a cache directory (if absent) and print its binary's path.

    python scripts/install_npm.py codex     # the Codex CLI the end-to-end tests run
    python scripts/install_npm.py ccusage   # the peer of the cost test and bench_usage.py

Used by scripts/test.sh, the tests (tests/support/codex.py) and the benchmarks; each
version is pinned here only.  ccusage is pinned to 20.0.24: 20.0.26's native binary
package is not published for linux-x64.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple


class Tool(NamedTuple):
    package: str
    version: str
    cache_env: str  # overrides the cache directory
    cache_name: str  # under $XDG_CACHE_HOME (~/.cache)
    purpose: str  # for the "npm not found" message


TOOLS = {
    "codex": Tool("@openai/codex", "0.169.0", "SPOOL_CODEX_CACHE", "spool-codex",
                  "the end-to-end tests"),
    "ccusage": Tool("ccusage", "20.0.24", "SPOOL_CCUSAGE_CACHE", "spool-ccusage",
                    "the cost acceptance test"),
}


def cache_dir(name: str) -> Path:
    tool = TOOLS[name]
    base = os.environ.get(tool.cache_env) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), tool.cache_name)
    return Path(base) / tool.version


def binary(name: str) -> Path:
    return cache_dir(name) / "node_modules" / ".bin" / name


def installed_version(path: Path) -> str | None:
    """What ``path --version`` says ("codex-cli 0.169.0", "v20.0.24" -> the number)."""
    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    words = out.stdout.strip().split()
    return words[-1].lstrip("v") if out.returncode == 0 and words else None


def ensure(name: str) -> Path:
    tool, path = TOOLS[name], binary(name)
    if path.exists() and installed_version(path) == tool.version:
        return path
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit(f"npm not found: install Node.js and npm to run {tool.purpose}.")
    cache_dir(name).mkdir(parents=True, exist_ok=True)
    subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(cache_dir(name)),
                    f"{tool.package}@{tool.version}"], check=True, stdout=sys.stderr)
    if installed_version(path) != tool.version:
        raise SystemExit(f"{name} {tool.version} did not install at {path}.")
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in TOOLS:
        raise SystemExit(f"usage: python {sys.argv[0]} {'|'.join(TOOLS)}")
    print(ensure(sys.argv[1]))
