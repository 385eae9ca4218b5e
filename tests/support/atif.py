"""Harbor's own ATIF validator, as its users run it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def harbor_validate(path: Path) -> subprocess.CompletedProcess:
    """Harbor's own validator, as its users run it."""
    import importlib.util

    assert importlib.util.find_spec("harbor") is not None, (
        "Harbor's validator is missing: run scripts/test.sh, or pip install --no-deps "
        "--ignore-requires-python harbor==0.26.0 pydantic")
    return subprocess.run([sys.executable, "-m", "harbor.utils.trajectory_validator", str(path)],
                          capture_output=True, text=True, timeout=120)
