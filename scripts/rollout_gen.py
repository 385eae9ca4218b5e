"""Generate realistic Codex 0.169 rollout files (for benchmarks: import, cost).

The line kinds, their order and their sizes follow the recorded rollouts in
tests/fixtures/codex-0.169.0: a session_meta line of tens of KB (base
instructions), per turn a task_started, developer/user context messages, a
world_state, a turn_context, then per model request a reasoning item (with an
encrypted blob), a function_call, a token_usage_record, the command's
item_completed (with its aggregated output) and function_call_output, a
token_count with rate limits; an agent message and task_complete at the end.
Deterministic for a seed.

    python scripts/rollout_gen.py OUT_DIR --mb 50 [--seed 1]

Library use: ``generate_tree(root, total_bytes, seed)`` -> list of files,
``session_lines(rng, session_id, t0, turns, requests)`` -> iterator of lines.
"""
from __future__ import annotations

import argparse
import random
import string
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import orjson

_WORDS = ("the", "file", "test", "build", "error", "fix", "function", "module", "value",
          "return", "import", "config", "session", "token", "output", "line", "path", "run")


def _text(rng: random.Random, n: int) -> str:
    out, size = [], 0
    while size < n:
        w = rng.choice(_WORDS)
        out.append(w)
        size += len(w) + 1
    return " ".join(out)[:n]


def _blob(rng: random.Random, n: int) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits + "+/", k=n))


def _ts(t: float) -> str:
    d = datetime.fromtimestamp(t, tz=timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


def _usage(rng: random.Random, context: int) -> dict:
    inp = context + rng.randint(200, 3000)
    cached = int(inp * rng.uniform(0.3, 0.9))
    out = rng.randint(20, 1500)
    reasoning = rng.randint(0, out)
    return {"input_tokens": inp, "cached_input_tokens": cached, "cache_write_input_tokens": 0,
            "output_tokens": out, "reasoning_output_tokens": reasoning,
            "total_tokens": inp + out}


def _add(a: dict | None, b: dict) -> dict:
    return {k: (a or {}).get(k, 0) + v for k, v in b.items()}


def session_lines(rng: random.Random, session_id: str, t0: float, turns: int,
                  requests: int, cwd: str = "/home/dev/project") -> Iterator[bytes]:
    """The lines of one session's rollout (each ends with a newline)."""
    t = t0
    n = 0

    def line(kind: str, payload: dict) -> bytes:
        nonlocal n, t
        t += rng.uniform(0.001, 0.4)
        n += 1
        return orjson.dumps({"timestamp": _ts(t), "ordinal": n - 1, "type": kind,
                             "payload": payload}) + b"\n"

    yield line("session_meta", {
        "session_id": session_id, "id": session_id, "timestamp": _ts(t), "cwd": cwd,
        "originator": "codex_cli_rs", "cli_version": "0.169.0", "source": "cli",
        "model_provider": "openai", "base_instructions": {"text": _text(rng, 24_000)},
        "git": {"commit_hash": "%040x" % rng.getrandbits(160), "branch": "main"}})
    thread_total: dict | None = None
    context = 4000
    for _ in range(turns):
        turn = str(uuid.UUID(int=rng.getrandbits(128)))
        yield line("event_msg", {"type": "task_started", "turn_id": turn,
                                 "model_context_window": 258400})
        yield line("response_item", {"type": "message", "role": "developer", "content": [
            {"type": "input_text", "text": _text(rng, 6000)}]})
        yield line("world_state", {"full": True, "state": {"agents_md": _text(rng, 3000)}})
        yield line("turn_context", {"turn_id": turn, "cwd": cwd, "approval_policy": "on-request",
                                    "model": "gpt-5.1-codex", "summary": "auto",
                                    "sandbox_policy": {"type": "workspace-write"}})
        prompt = _text(rng, rng.randint(20, 600))
        yield line("response_item", {"type": "message", "role": "user",
                                     "content": [{"type": "input_text", "text": prompt}]})
        yield line("event_msg", {"type": "item_completed", "thread_id": session_id,
                                 "turn_id": turn, "item": {
                                     "type": "UserMessage", "id": str(uuid.uuid4()),
                                     "content": [{"type": "text", "text": prompt}]}})
        turn_total: dict | None = None
        for r in range(requests):
            rid = f"{turn[:8]}-{r}"
            summary = _text(rng, 200)
            yield line("event_msg", {"type": "item_completed", "thread_id": session_id,
                                     "turn_id": turn, "item": {
                                         "type": "Reasoning", "id": "rs_" + rid,
                                         "summary_text": [summary], "raw_content": []}})
            yield line("response_item", {"type": "reasoning", "id": "rs_" + rid, "summary": [
                {"type": "summary_text", "text": summary}],
                "encrypted_content": _blob(rng, rng.randint(1000, 6000))})
            last = r == requests - 1
            u = _usage(rng, context)
            context += rng.randint(500, 3000)
            turn_total, thread_total = _add(turn_total, u), _add(thread_total, u)
            if not last:
                cmd = f"rg -n {rng.choice(_WORDS)} src/"
                yield line("response_item", {"type": "function_call", "name": "exec_command",
                                             "arguments": orjson.dumps({"cmd": cmd}).decode(),
                                             "call_id": "call_" + rid})
            yield line("token_usage_record", {
                "thread_id": session_id, "turn_id": turn, "session_id": session_id,
                "response_id": "resp_" + rid, "usage": u, "turn_token_usage": turn_total,
                "thread_token_usage": thread_total})
            if not last:
                output = _text(rng, rng.choice((100, 800, 4000, 20000)))
                yield line("event_msg", {"type": "item_completed", "thread_id": session_id,
                                         "turn_id": turn, "item": {
                                             "type": "CommandExecution", "id": "call_" + rid,
                                             "command": ["/bin/bash", "-lc", cmd],
                                             "status": "completed",
                                             "aggregated_output": output,
                                             "exit_code": rng.choice((0, 0, 0, 1)),
                                             "duration": {"secs": 0,
                                                          "nanos": rng.randint(1, 10**9)}}})
                yield line("response_item", {"type": "function_call_output",
                                             "call_id": "call_" + rid, "output": output})
            yield line("event_msg", {"type": "token_count", "info": {
                "total_token_usage": thread_total, "last_token_usage": u,
                "model_context_window": 258400},
                "rate_limits": {"primary": {"used_percent": rng.random() * 100}}})
        answer = _text(rng, rng.randint(100, 2000))
        yield line("event_msg", {"type": "item_completed", "thread_id": session_id,
                                 "turn_id": turn, "item": {"type": "AgentMessage", "id": rid,
                                                           "content": [{"type": "Text",
                                                                        "text": answer}]}})
        yield line("response_item", {"type": "message", "role": "assistant",
                                     "content": [{"type": "output_text", "text": answer}]})
        yield line("event_msg", {"type": "task_complete", "turn_id": turn,
                                 "last_agent_message": answer})


def generate_tree(root: Path, total_bytes: int, seed: int = 1) -> list[Path]:
    """Rollout files under ``root/YYYY/MM/DD/`` until ``total_bytes`` are written."""
    rng = random.Random(seed)
    written = 0
    files = []
    t0 = 1_790_000_000.0
    while written < total_bytes:
        sid = str(uuid.UUID(int=rng.getrandbits(128)))
        t0 += rng.uniform(600, 7200)
        day = datetime.fromtimestamp(t0, tz=timezone.utc)
        d = root / day.strftime("%Y/%m/%d")
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"rollout-{day.strftime('%Y-%m-%dT%H-%M-%S')}-{sid}.jsonl"
        with open(p, "wb") as fh:
            for ln in session_lines(rng, sid, t0, rng.randint(1, 12), rng.randint(2, 12)):
                fh.write(ln)
                written += len(ln)
        files.append(p)
    return files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--mb", type=float, default=50.0)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    files = generate_tree(a.out, int(a.mb * 1e6), a.seed)
    print(f"{len(files)} rollout files, {sum(f.stat().st_size for f in files) / 1e6:.1f} MB"
          f" under {a.out}")


if __name__ == "__main__":
    main()
