"""spool commands: worker_cmd (to be filled)."""
from __future__ import annotations

from ..cli import app  # noqa: F401
