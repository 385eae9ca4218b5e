"""A fake OpenAI Responses-API model server for running the real Codex CLI offline.

Binds 127.0.0.1 on a free port and answers:

* ``GET  /v1/models`` (and ``/models``): an empty model list;
* ``POST /v1/responses``: Server-Sent Events scripted per turn.

A *script* is a list of turns; a turn is a list of steps; a step is what one
model request returns: a list of tool calls (each one ``exec_command`` call)
or, for the last step, the final assistant message.  A request whose last
input item is a user message starts the next turn; a request whose last input
item is a ``function_call_output`` moves to the next step of the current turn.
Past the end of the script it answers with a plain final message.

Subagents (Codex multi-agent v1): a step may be ``[SpawnAgent(message)]`` (a
``spawn_agent`` function call in the ``multi_agent_v1`` namespace) or
``[WaitAgent()]`` (``wait_agent`` with ``{"targets": [agent_id]}``, the id read
from the spawn call's output in the request body).  Requests carrying the
``x-openai-subagent`` header are the child's: they follow ``child_script`` (one
list of steps, each request the next step), not the parent's script.  A
``<subagent_notification>`` user message Codex appends to the parent's input
does not start a new turn.

Every response reports DISTINCT token usage (``usage_for(n)``) and the server
keeps a log of what it served (``served``), so a test can check token
accounting against the numbers the model really sent.  A compaction request
(Codex's "CONTEXT CHECKPOINT COMPACTION" prompt) is answered with a summary and
small usage, and every later response reports small usage too, so Codex does
not compact in a loop.

Run standalone for manual experiments: ``python tests/support/fake_model.py`` prints
the base URL and serves the default script until interrupted.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

COMPACTION_MARKER = "CONTEXT CHECKPOINT COMPACTION"


@dataclass
class ToolCall:
    cmd: str


@dataclass
class Final:
    text: str


@dataclass
class SpawnAgent:
    message: str


@dataclass
class WaitAgent:
    timeout_ms: int = 30000


Step = list  # list[ToolCall] or [Final] or [SpawnAgent] or [WaitAgent]
SUBAGENT_HEADER = "x-openai-subagent"
NAMESPACE = "multi_agent_v1"


def default_script() -> list[list[Step]]:
    """Two turns: several tool calls, one command failing with exit 3, a final message."""
    return [
        [  # turn 1
            [ToolCall("echo hello")],
            [ToolCall("echo second; ls -1 | head -3")],
            [ToolCall("sh -c 'echo failing >&2; exit 3'")],
            [Final("Turn one done: ran three commands, one failed.")],
        ],
        [  # turn 2 (resume)
            [ToolCall("echo resumed")],
            [Final("Turn two done.")],
        ],
    ]


def usage_for(n: int, small: bool = False) -> dict[str, Any]:
    """Distinct usage for the n-th response (0-based): no two responses share a number."""
    if small:
        inp, cached, out, reasoning = 40 + n, 3 + n, 5 + n, 1 + n
    else:
        inp = 1000 + 137 * n
        cached = 300 + 41 * n
        out = 60 + 17 * n
        reasoning = 11 + 5 * n
    return {
        "input_tokens": inp,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": out,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": inp + out,
    }


@dataclass
class Served:
    """One answered model request."""

    n: int
    kind: str  # "tool_calls" | "final" | "compaction" | "fallback"
    turn: int | None
    step: int | None
    usage: dict[str, Any]
    commands: list[str] = field(default_factory=list)
    call_ids: list[str] = field(default_factory=list)
    subagent: str | None = None  # the x-openai-subagent header of a child's request
    tools: list[str] = field(default_factory=list)  # the function names called


def _last_input_kind(body: dict) -> str:
    items = body.get("input") or []
    if not items:
        return "none"
    last = items[-1]
    t = last.get("type")
    if t == "function_call_output" or t == "custom_tool_call_output":
        return "tool_output"
    if last.get("role") == "user" or t == "message":
        if _text_of(last).lstrip().startswith("<subagent_notification>"):
            return "notification"  # Codex tells the parent a child finished: no new turn
        return "user"
    return str(t)


def _text_of(item: dict) -> str:
    content = item.get("content")
    if isinstance(content, str):
        return content
    return "".join(c.get("text") or "" for c in content or [] if isinstance(c, dict))


def _spawned_agent_ids(body: dict) -> list[str]:
    """The agent ids in the outputs of the spawn_agent calls of a request's input."""
    spawn_calls = {i.get("call_id") for i in body.get("input") or []
                   if i.get("type") == "function_call" and i.get("name") == "spawn_agent"}
    out = []
    for i in body.get("input") or []:
        if i.get("type") == "function_call_output" and i.get("call_id") in spawn_calls:
            try:
                aid = json.loads(i.get("output") or "{}").get("agent_id")
            except (ValueError, AttributeError):
                aid = None
            if aid:
                out.append(aid)
    return out


def _is_compaction(raw: bytes) -> bool:
    return COMPACTION_MARKER.encode() in raw


class FakeModel:
    """The server; use as a context manager or call start()/stop()."""

    def __init__(self, script: list[list[Step]] | None = None, host: str = "127.0.0.1",
                 port: int = 0, child_script: list[Step] | None = None) -> None:
        self.script = default_script() if script is None else script
        self.child_script = child_script or []
        self._child_step = 0
        self.served: list[Served] = []
        self.requests: list[dict] = []  # request bodies, in order
        self.get_paths: list[str] = []
        self._lock = threading.Lock()
        self._turn = -1
        self._step = 0
        self._compacted = False
        self._seq = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):  # noqa: N802
                with fake._lock:
                    fake.get_paths.append(self.path)
                if self.path.split("?")[0].rstrip("/").endswith("/models"):
                    self._send(200, b'{"object":"list","data":[],"models":[]}',
                               "application/json")
                else:
                    self._send(404, b'{"error":"not found"}', "application/json")

            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if not self.path.split("?")[0].rstrip("/").endswith("/responses"):
                    self._send(404, b'{"error":"not found"}', "application/json")
                    return
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    self._send(400, b'{"error":"bad json"}', "application/json")
                    return
                events = fake._answer(body, raw, self.headers.get(SUBAGENT_HEADER))
                payload = b"".join(
                    b"event: " + e["type"].encode() + b"\ndata: "
                    + json.dumps(e).encode() + b"\n\n" for e in events)
                self._send(200, payload, "text/event-stream")

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------
    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "FakeModel":
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "FakeModel":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- answering -----------------------------------------------------------
    def _answer(self, body: dict, raw: bytes, subagent: str | None = None) -> list[dict]:
        with self._lock:
            self.requests.append(body)
            n = self._seq
            self._seq += 1
            rid = f"resp_{n + 1}"
            if _is_compaction(raw):
                self._compacted = True
                usage = usage_for(n, small=True)
                self.served.append(Served(n, "compaction", None, None, usage))
                item = _message(f"msg_{n + 1}", "Summary: the user asked for shell commands; "
                                "they were run.")
                return _events(rid, [item], usage)
            if subagent:
                step = (self.child_script[self._child_step]
                        if self._child_step < len(self.child_script) else None)
                self._child_step += 1
                return self._respond(n, rid, step, None, self._child_step - 1, body, subagent)
            kind = _last_input_kind(body)
            if kind == "user":
                self._turn += 1
                self._step = 0
            else:
                self._step += 1
            step = None
            if 0 <= self._turn < len(self.script) and self._step < len(self.script[self._turn]):
                step = self.script[self._turn][self._step]
            return self._respond(n, rid, step, self._turn, self._step, body, None)

    def _respond(self, n: int, rid: str, step: Step | None, turn: int | None,
                 step_no: int | None, body: dict, subagent: str | None) -> list[dict]:
        """The events answering request ``n`` with ``step`` (lock held)."""
        usage = usage_for(n, small=self._compacted)
        if step is None:
            self.served.append(Served(n, "fallback", turn, step_no, usage, subagent=subagent))
            return _events(rid, [_message(f"msg_{n + 1}", "Done.")], usage)
        if step and isinstance(step[0], Final):
            self.served.append(Served(n, "final", turn, step_no, usage, subagent=subagent))
            return _events(rid, [_message(f"msg_{n + 1}", step[0].text)], usage)
        items, cmds, ids, tools = [], [], [], []
        for k, call in enumerate(step):
            call_id = f"call_{n + 1}_{k + 1}"
            item = {"type": "function_call", "id": f"fc_{n + 1}_{k + 1}", "call_id": call_id}
            if isinstance(call, SpawnAgent):
                item.update(name="spawn_agent", namespace=NAMESPACE,
                            arguments=json.dumps({"message": call.message}))
            elif isinstance(call, WaitAgent):
                item.update(name="wait_agent", namespace=NAMESPACE, arguments=json.dumps(
                    {"targets": _spawned_agent_ids(body), "timeout_ms": call.timeout_ms}))
            else:
                item.update(name="exec_command", arguments=json.dumps({"cmd": call.cmd}))
                cmds.append(call.cmd)
            items.append(item)
            ids.append(call_id)
            tools.append(item["name"])
        self.served.append(Served(n, "tool_calls", turn, step_no, usage, cmds, ids,
                                  subagent=subagent, tools=tools))
        return _events(rid, items, usage)

    def served_json(self) -> list[dict]:
        with self._lock:
            return [s.__dict__.copy() for s in self.served]


def _message(mid: str, text: str) -> dict:
    return {"type": "message", "role": "assistant", "id": mid,
            "content": [{"type": "output_text", "text": text}]}


def _events(rid: str, items: list[dict], usage: dict) -> list[dict]:
    out: list[dict] = [{"type": "response.created", "response": {"id": rid}}]
    for item in items:
        out.append({"type": "response.output_item.done", "item": item})
    out.append({"type": "response.completed", "response": {"id": rid, "usage": usage}})
    return out


if __name__ == "__main__":  # pragma: no cover - manual use
    import time

    with FakeModel() as fm:
        print(fm.base_url, flush=True)
        try:
            while True:
                time.sleep(3600)  # manual use: serve until Ctrl-C (no test runs this)
        except KeyboardInterrupt:
            pass
