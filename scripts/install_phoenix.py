"""Install the pinned Arize Phoenix into its own virtualenv (if absent); print its `phoenix` path.

Phoenix is a test receiver for the OTLP sink's end-to-end test. Its ~850 MB of dependencies stay
out of spool's environment: they go into ~/.cache/spool-phoenix/<version>/venv (or
$SPOOL_PHOENIX_CACHE/<version>/venv). Idempotent: a second run only checks the version.
Used by scripts/test.sh and by the `phoenix` fixture in tests/conftest.py.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PHOENIX_VERSION = "20.26.1"


def cache_dir() -> Path:
    base = os.environ.get("SPOOL_PHOENIX_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "spool-phoenix")
    return Path(base) / PHOENIX_VERSION


def venv_python() -> Path:
    return cache_dir() / "venv" / "bin" / "python"


def phoenix_bin() -> Path:
    return cache_dir() / "venv" / "bin" / "phoenix"


def _marker() -> Path:
    return cache_dir() / "installed.ok"


def installed() -> bool:
    """True when a completed install of the pinned version is present (marker written last)."""
    return phoenix_bin().exists() and _marker().exists() and \
        _marker().read_text().strip() == PHOENIX_VERSION


def ensure_phoenix() -> Path:
    if installed():
        return phoenix_bin()
    cache_dir().mkdir(parents=True, exist_ok=True)
    if not venv_python().exists():
        subprocess.run([sys.executable, "-m", "venv", str(cache_dir() / "venv")], check=True)
    subprocess.run([str(venv_python()), "-m", "pip", "install", "--quiet",
                    f"arize-phoenix=={PHOENIX_VERSION}"], check=True, stdout=sys.stderr)
    if not phoenix_bin().exists():
        raise SystemExit(f"Phoenix {PHOENIX_VERSION} did not install at {phoenix_bin()}.")
    _marker().write_text(PHOENIX_VERSION + "\n")
    return phoenix_bin()


if __name__ == "__main__":
    print(ensure_phoenix())
