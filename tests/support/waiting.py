"""Synchronisation in tests: poll a condition until it holds, failing after a deadline."""
from __future__ import annotations

import time


def wait_until(cond, timeout: float = 20.0, interval: float = 0.05, what: str = "condition"):
    """Poll ``cond`` until it returns something truthy (returned); fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
