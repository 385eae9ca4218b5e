"""Helpers for tests (and scripts/) that run the REAL Codex CLI offline.

* ``codex_binary()``: the pinned Codex from npm (``scripts/install_npm.py``).
* ``make_codex_home(root)``: an isolated CODEX_HOME whose config.toml points at
  the fake model server (tests/support/fake_model.py) through the provider "fake"; the
  server's URL is passed per run with ``-c model_providers.fake.base_url=...``.
* ``make_codex_project(root)``: a scratch git project with one commit.
* ``run_session(...)``: runs ``codex exec --json PROMPT </dev/null`` and then
  ``codex exec resume --last --json PROMPT </dev/null`` for each further
  prompt, against a fresh FakeModel, inside ``unshare -n`` (a network
  namespace with only loopback up) when the machine allows it, else on plain
  loopback.  The fake server runs in the same namespace: this module is also
  the runner script executed there (``python tests/support/codex.py SPEC OUT``).
* ``run_session(..., receiver_port=N, wait_worker=S)``: also serves a loopback
  Infinium-compatible receiver (spool.demo.receiver.Receiver, secret from
  INFINIUM_AGENT_SECRET in the environment) on port N inside the namespace, so
  the spool worker the hooks autostart there can deliver to it; after the last
  Codex run, waits (at most S seconds) until no spool worker holds the lock
  and the spool is idle, then returns what the receiver got
  (``SessionResult.received``; the x-agent-key header is never written out).
  ``free_port()`` picks N.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent  # on sys.path: ``support`` is importable
REPO = TESTS.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

CONFIG_TOML = """\
# isolated CODEX_HOME for spool's tests: every model request goes to a local fake server
model = "gpt-fake"
model_provider = "fake"
approval_policy = "never"
sandbox_mode = "danger-full-access"
check_for_update_on_startup = false

[model_providers.fake]
name = "local fake"
base_url = "http://127.0.0.1:9/v1"
wire_api = "responses"
env_key = "FAKE_OPENAI_API_KEY"
request_max_retries = 0
stream_max_retries = 0

[features]
hooks = true
"""


def _install_npm_module():
    path = REPO / "scripts" / "install_npm.py"
    spec = importlib.util.spec_from_file_location("spool_install_npm", path)
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


@functools.lru_cache(maxsize=None)
def npm_tool(name: str) -> Path:
    """A pinned npm tool (codex, ccusage), installed into the cache if absent."""
    return Path(_install_npm_module().ensure(name))


def codex_binary() -> Path:
    """The pinned Codex binary, installed from npm into the cache if absent."""
    return npm_tool("codex")


def codex_version() -> str:
    return _install_npm_module().TOOLS["codex"].version


@functools.lru_cache(maxsize=1)
def unshare_prefix() -> tuple[str, ...]:
    """The command prefix that runs something in a loopback-only network namespace.

    Empty when the machine does not allow it (then tests use plain loopback).
    """
    if not shutil.which("unshare") or os.environ.get("SPOOL_TEST_NO_UNSHARE"):
        return ()
    for prefix in (("unshare", "-n"), ("unshare", "-rn")):
        try:
            r = subprocess.run([*prefix, "true"], capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if r.returncode == 0:
            return prefix
    return ()


def make_codex_home(root: Path) -> Path:
    home = Path(root) / "codex-home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(CONFIG_TOML)
    return home


def make_codex_project(root: Path, name: str = "proj") -> Path:
    """A scratch git project with one commit (what Codex needs to trust and run in)."""
    proj = Path(root) / name
    proj.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.invalid",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.invalid")
    subprocess.run(["git", "init", "-q", "-b", "main", str(proj)], check=True, env=env)
    (proj / "README.md").write_text("scratch project for spool's Codex tests\n")
    subprocess.run(["git", "-C", str(proj), "add", "README.md"], check=True, env=env)
    subprocess.run(["git", "-C", str(proj), "commit", "-q", "-m", "init"], check=True, env=env)
    return proj.resolve()


def codex_env(codex_home: Path, extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env.update({"CODEX_HOME": str(codex_home), "FAKE_OPENAI_API_KEY": "fake-key",
                "NO_COLOR": "1", "RUST_LOG": "error"})
    if extra:
        env.update(extra)
    return env


@dataclass
class CodexRun:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def events(self) -> list[dict]:
        """The JSONL events `codex exec --json` printed."""
        out = []
        for line in self.stdout.splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out


@dataclass
class SessionResult:
    runs: list[CodexRun]
    served: list[dict]
    get_paths: list[str]
    isolated: bool
    requests: list[dict] = field(default_factory=list)
    # with receiver_port: what the receiver got, and how the wait for the worker went
    received: list[dict] = field(default_factory=list)
    worker_wait_seconds: float | None = None
    worker_timed_out: bool = False

    def check(self) -> "SessionResult":
        for r in self.runs:
            if r.returncode != 0:
                raise AssertionError(f"{r.argv[-1]!r} exited {r.returncode}:\n{r.stderr[-3000:]}")
        return self


def run_session(project: Path, codex_home: Path, prompts: list[str], *, script=None,
                env: dict | None = None, isolate: bool | None = None, timeout: float = 180,
                codex_bin: Path | None = None, tmp: Path | None = None,
                extra_args: list[str] | None = None, receiver_port: int | None = None,
                wait_worker: float | None = None, wrap: list[str] | None = None,
                child_script: list | None = None) -> SessionResult:
    """Run one Codex session (exec, then `exec resume --last` per further prompt).

    ``receiver_port``: serve spool.demo.receiver.Receiver there (in the namespace),
    its secret = INFINIUM_AGENT_SECRET of the (merged) environment.
    ``child_script``: the steps a subagent's model requests get (tests/support/fake_model.py).
    ``wrap``: a command line each Codex invocation is appended to (e.g.
    ``[spool, "run", "--"]``: the argv then goes on with the Codex binary).
    ``wait_worker``: after the runs, wait up to that many seconds for the spool
    worker to finish (lock free and spool idle); past it the worker is stopped
    (SIGTERM to the lock holder) and ``worker_timed_out`` is set.
    """
    codex_bin = codex_bin or codex_binary()
    prefix = unshare_prefix() if isolate in (None, True) else ()
    if isolate and not prefix:
        raise RuntimeError("network isolation requested but `unshare -n` is not available")
    tmp = Path(tmp or codex_home.parent)
    spec_path = tmp / f"codex-run-{time.time_ns()}.json"
    out_path = spec_path.with_suffix(".out.json")
    spec = {"codex": str(codex_bin), "project": str(project), "prompts": prompts,
            "script": _script_to_json(script), "isolated": bool(prefix),
            "extra_args": extra_args or [], "timeout": timeout,
            "receiver_port": receiver_port, "wait_worker": wait_worker, "wrap": wrap or [],
            "child_script": [_step_to_json(st) for st in child_script or []]}
    spec_path.write_text(json.dumps(spec))
    argv = [*prefix, sys.executable, str(Path(__file__).resolve()), str(spec_path), str(out_path)]
    r = subprocess.run(argv, env=codex_env(codex_home, env), stdin=subprocess.DEVNULL,
                       capture_output=True, text=True,
                       timeout=timeout * max(1, len(prompts)) + (wait_worker or 0) + 30)
    if r.returncode != 0 or not out_path.exists():
        raise RuntimeError(f"codex runner failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    data = json.loads(out_path.read_text())
    return SessionResult(runs=[CodexRun(**x) for x in data["runs"]], served=data["served"],
                         get_paths=data["get_paths"], isolated=bool(prefix),
                         requests=data["requests"], received=data.get("received", []),
                         worker_wait_seconds=data.get("worker_wait_seconds"),
                         worker_timed_out=bool(data.get("worker_timed_out")))


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (in a fresh network namespace, every port is)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _step_to_json(step) -> list[dict]:
    from support.fake_model import Final, SpawnAgent, WaitAgent

    out = []
    for s in step:
        if isinstance(s, Final):
            out.append({"final": s.text})
        elif isinstance(s, SpawnAgent):
            out.append({"spawn": s.message})
        elif isinstance(s, WaitAgent):
            out.append({"wait": s.timeout_ms})
        else:
            out.append({"cmd": s.cmd})
    return out


def _step_from_json(step) -> list:
    from support.fake_model import Final, SpawnAgent, ToolCall, WaitAgent

    return [Final(s["final"]) if "final" in s else SpawnAgent(s["spawn"]) if "spawn" in s
            else WaitAgent(s["wait"]) if "wait" in s else ToolCall(s["cmd"]) for s in step]


def _script_to_json(script):
    if script is None:
        return None
    return [[_step_to_json(step) for step in turn] for turn in script]


def _script_from_json(data):
    if data is None:
        return None
    return [[_step_from_json(step) for step in turn] for turn in data]


def exec_argv(codex_bin: str, base_url: str, prompt: str, resume: bool,
              extra_args: list[str] | None = None) -> list[str]:
    """`codex exec [resume --last] --json PROMPT` with the fake server's URL."""
    argv = [codex_bin, "-c", f'model_providers.fake.base_url="{base_url}"', "exec"]
    if resume:
        argv += ["resume", "--last"]
    return argv + ["--json", *(extra_args or []), prompt]


def _nameservers() -> list[str]:
    try:
        lines = Path("/etc/resolv.conf").read_text().splitlines()
    except OSError:
        return []
    return [ln.split()[1] for ln in lines if ln.startswith("nameserver") and len(ln.split()) > 1
            and ":" not in ln.split()[1]]


def _start_fake_dns() -> None:
    """Answer every DNS query with NXDOMAIN at once (inside the namespace only).

    Without it Codex's musl resolver waits out its timeouts on the unreachable
    nameserver (lookups of api.github.com, chatgpt.com): ~5 s per `codex exec`.
    """
    import socket
    import threading

    for ns in _nameservers():
        subprocess.run(["ip", "addr", "add", f"{ns}/32", "dev", "lo"], capture_output=True)
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((ns, 53))
        except OSError:
            continue

        def serve(s=sock):
            while True:
                try:
                    q, addr = s.recvfrom(4096)
                except OSError:
                    return
                if len(q) < 12:
                    continue
                # Same id and question; QR=1, RD copied, RA=1, RCODE=3 (NXDOMAIN).
                flags = bytes([0x80 | (q[2] & 0x01), 0x83])
                s.sendto(q[:2] + flags + q[4:6] + b"\0\0\0\0\0\0" + q[12:], addr)

        threading.Thread(target=serve, daemon=True).start()


def _runner(spec_path: str, out_path: str) -> int:
    """Inside the (possibly isolated) namespace: serve the fake model, run Codex."""
    sys.path.insert(0, str(TESTS))
    from support.fake_model import FakeModel

    spec = json.loads(Path(spec_path).read_text())
    if spec["isolated"]:
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        _start_fake_dns()
    runs = []
    rx = None
    if spec.get("receiver_port"):
        from spool.demo.receiver import Receiver

        rx = Receiver(secret=os.environ.get("INFINIUM_AGENT_SECRET"),
                      port=int(spec["receiver_port"])).start()
    child = [_step_from_json(st) for st in spec.get("child_script") or []]
    with FakeModel(_script_from_json(spec["script"]), child_script=child) as fm:
        for i, prompt in enumerate(spec["prompts"]):
            argv = [*spec.get("wrap", []),
                    *exec_argv(spec["codex"], fm.base_url, prompt, i > 0, spec["extra_args"])]
            t0 = time.perf_counter()
            try:
                r = subprocess.run(argv, cwd=spec["project"], stdin=subprocess.DEVNULL,
                                   capture_output=True, text=True, timeout=spec["timeout"])
                rc, so, se = r.returncode, r.stdout, r.stderr
            except subprocess.TimeoutExpired as exc:
                rc, so, se = -9, str(exc.stdout or ""), f"timeout: {exc}"
            runs.append({"argv": argv, "returncode": rc, "stdout": so, "stderr": se,
                         "seconds": time.perf_counter() - t0})
        out = {"runs": runs, "served": fm.served_json(), "get_paths": list(fm.get_paths),
               "requests": list(fm.requests)}
    if spec.get("wait_worker") is not None:
        out["worker_wait_seconds"], out["worker_timed_out"] = _wait_for_worker(
            float(spec["wait_worker"]))
    if rx is not None:
        out["received"] = [_dump_request(r, rx.secret) for r in rx.requests]
        rx.stop()
    Path(out_path).write_text(json.dumps(out))
    return 0


def _wait_for_worker(deadline_s: float) -> tuple[float, bool]:
    """Wait until no spool worker holds the lock and the spool is idle.

    A worker the hooks started exits on its own (SPOOL_WORKER_IDLE_EXIT) once
    nothing is open, pending or held.  Past the deadline: SIGTERM to the lock
    holder (the worker our hooks started, by its pid), and report a timeout.
    """
    import signal

    from spool import db, paths
    from spool import worker as w

    from support.waiting import wait_until

    home = paths.spool_home()
    t0 = time.monotonic()

    def done() -> bool:
        if w.lock_is_held(home):
            return False
        if not paths.db_path(home).exists():
            return True
        engine = db.make_engine(paths.db_path(home))
        try:
            idle = w.is_idle(engine, home)
        finally:
            engine.dispose()
        return idle and not w.lock_is_held(home)

    try:
        wait_until(done, deadline_s, 0.1, what="the spool worker to finish")
    except AssertionError:
        pid = w.holder_pid(home)
        if pid:
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
        return time.monotonic() - t0, True
    return time.monotonic() - t0, False


def _dump_request(r, secret: str | None) -> dict:
    """A receiver request as JSON, without the secret (whether it matched instead)."""
    headers = {k: v for k, v in r.headers.items() if k != "x-agent-key"}
    return {"seq": r.seq, "at": r.at, "path": r.path, "agent_id": r.agent_id,
            "headers": headers, "key": r.key, "status": r.status, "action": r.action,
            "agent_key_ok": secret is not None and r.headers.get("x-agent-key") == secret,
            "body": r.body.decode("utf-8", "replace")}


if __name__ == "__main__":
    raise SystemExit(_runner(sys.argv[1], sys.argv[2]))

def wrapped_codex(tmp_path: Path, overrides: list[str]) -> Path:
    """A `codex` that passes these overrides first (for AppServer, which takes a binary)."""
    import shlex
    import stat

    w = tmp_path / "codex-with-overrides"
    w.write_text(f"#!/bin/sh\nexec {shlex.quote(str(codex_binary()))} "
                 f"{shlex.join(overrides)} \"$@\"\n")
    w.chmod(w.stat().st_mode | stat.S_IXUSR)
    return w
