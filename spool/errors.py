"""User-facing errors: every one says what is wrong and what to do."""
from __future__ import annotations


class SpoolError(Exception):
    """An error the CLI prints as one line: reason, then instruction."""

    def __init__(self, reason: str, instruction: str = "") -> None:
        self.reason = reason
        self.instruction = instruction
        super().__init__(f"{reason} {instruction}".strip())


class UsageError(SpoolError):
    """A malformed command line (a bad option value): one line, exit 2."""

    exit_code = 2
