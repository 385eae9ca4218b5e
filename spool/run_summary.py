"""The one line ``spool run`` prints on stderr after Codex exits (pure).

Built from ``queries.run_activity`` (what this run's hook events became).
"""
from __future__ import annotations

from collections import Counter

# outbox states that are still on their way
IN_PROGRESS = ("pending", "in_flight", "failed")


def settled(activity: dict) -> bool:
    """Nothing of this run left to ingest, trace or deliver (a retrying row is not settled)."""
    return (not activity["unparsed"] and not activity["open_turns"]
            and not any(r["state"] in IN_PROGRESS for r in activity["outbox"]))


def tokens(usages: list[dict]) -> dict[str, int]:
    keys = ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_output_tokens",
            "total_tokens")
    total = {k: 0 for k in keys}
    for u in usages:
        for k in keys:
            v = u.get(k)
            if isinstance(v, int) and not isinstance(v, bool):
                total[k] += v
    return total


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def summary_line(activity: dict, *, exit_code: int, waited: float, timed_out: bool,
                 run_id: str | None = None) -> str:
    """``spool run: 1 session, 2 turns, 1,234 tokens (in 1,000, out 234); 2 traces -> file: 2 sent``."""
    head = "spool run" + (f" {run_id}" if run_id else "")
    if not activity["events"] and not activity["unparsed"]:
        return (f"{head}: no hook events recorded (Codex exited {exit_code}); "
                "run `spool doctor` if you expected some.")
    t = tokens(activity["usages"])
    parts = [f"{_plural(len(activity['sessions']), 'session')}, "
             f"{_plural(len(activity['turns']), 'turn')}, "
             f"{t['total_tokens']:,} tokens (in {t['input_tokens']:,}, "
             f"cached {t['cached_input_tokens']:,}, out {t['output_tokens']:,})"]
    traces = {r["trace_id"] for r in activity["outbox"]}
    by_sink: dict[str, Counter] = {}
    for r in activity["outbox"]:
        by_sink.setdefault(r["sink"], Counter())[r["state"]] += 1
    if by_sink:
        sinks = "; ".join(f"{sink}: " + ", ".join(f"{n} {state}" for state, n in sorted(c.items()))
                          for sink, c in sorted(by_sink.items()))
        parts.append(f"{_plural(len(traces), 'trace')} -> {sinks}")
    else:
        parts.append("no traces yet")
    if activity["open_turns"] or activity["unparsed"]:
        parts.append(f"{_plural(len(activity['open_turns']), 'turn')} not traced yet")
    line = f"{head}: " + "; ".join(parts)
    if timed_out:
        line += f" (still in progress after {waited:.0f} s: `spool history` shows the rest)"
    return line
