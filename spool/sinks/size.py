"""The body size policy every sink applies: at most 1 MiB of JSON, never refused.

``shrink(body)`` returns the body made to fit and a note saying what was cut
(None when it already fit): step previews trimmed first, then steps dropped
from the middle (the first and last kept), then every long string cut.  A sink
names its step list and preview fields (``steps_key``, ``preview_keys``) and
says where the note goes (``mark``).  Pure: the input is never modified.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Sequence

from ..redact import cut

MAX_BODY = 1024 * 1024
NOTE_RESERVE = 600  # room for the note itself
PREVIEW_KEYS = ("input_preview", "output_preview", "description")


def size(body: Any) -> int:
    """Bytes of ``body`` as compact-enough UTF-8 JSON (what the sinks send, or more)."""
    return len(json.dumps(body, ensure_ascii=False).encode())


def _cut(value: Any, n: int, red: bool = False) -> Any:
    if isinstance(value, str):
        return cut(value, n, redact=red)
    if isinstance(value, list):
        return [_cut(v, n, red) for v in value]
    if isinstance(value, dict):
        return {k: _cut(v, n, red) for k, v in value.items()}
    return value


def shrink(body: dict, limit: int = MAX_BODY, *, steps_key: str = "steps",
           preview_keys: Sequence[str] = PREVIEW_KEYS,
           mark: Callable[[dict, str], None] | None = None,
           redact: bool = False) -> tuple[dict, str | None]:
    """``body`` made to fit in ``limit`` bytes of JSON, and a note saying what was cut
    (None when it already fit).  ``mark(body, note)`` records the note in a shrunk
    body.  With ``redact`` every cut string is redacted first (spool.redact.cut).  Pure."""
    original = size(body)
    if original <= limit:
        return body, None
    body = json.loads(json.dumps(body))  # a private deep copy
    done: list[str] = []
    reserve = NOTE_RESERVE
    steps = body.get(steps_key) if isinstance(body.get(steps_key), list) else None
    if steps:
        for n in (2000, 500, 120, 20):
            for step in steps:
                if isinstance(step, dict):
                    for key in preview_keys:
                        if key in step:
                            step[key] = _cut(step[key], n, redact)
            if size(body) + reserve <= limit:
                break
        done.append(f"step previews trimmed to {n} chars")
    if steps and size(body) + reserve > limit:
        total = len(steps)
        keep = total
        while keep > 2 and size(body) + reserve > limit:
            keep //= 2
            body[steps_key] = steps[: (keep + 1) // 2] + steps[total - keep // 2:]
        done.append(f"{total - len(body[steps_key])} of {total} steps dropped from the middle")
    for n in (8000, 2000, 500, 100):
        if size(body) + reserve <= limit:
            break
        body = _cut(body, n, redact)
        done.append(f"strings cut to {n} chars")
    note = f"body shrunk by spool from {original} bytes to fit 1 MiB: " + "; ".join(done)
    if mark is not None:
        mark(body, note)
    return body, note
