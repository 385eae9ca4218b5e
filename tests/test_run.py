"""`spool run`: the overrides it builds (pure), its bad-input paths (a stand-in
``codex`` script that records how it was called), and the summary line.

The hash rule is checked against the REAL Codex (``codex app-server``
``hooks/list`` ``currentHash``) in tests/test_run_e2e.py.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from spool import codex, codex_run, paths, run_summary

from support.rows import insert_raw
from support.waiting import wait_until


SPOOL = str(Path(sys.executable).parent / "spool")


def test_hash_is_sha256_of_codex_compact_sorted_json_with_clamped_timeouts():
    group = {"matcher": "*", "hooks": [{"type": "command", "command": "py hook.py", "timeout": 30}]}
    doc = {"event_name": "pre_tool_use", "matcher": "*",
           "hooks": [{"type": "command", "command": "py hook.py", "timeout": 30, "async": False}]}
    want = "sha256:" + hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":"))
                                      .encode()).hexdigest()
    assert codex_run.hook_hash("PreToolUse", group) == want
    # SessionEnd/Interrupt: hashed with 3 whatever is asked (Codex clamps them)
    end = codex_run.hook_hash("SessionEnd", {"matcher": "*", "hooks": [
        {"type": "command", "command": "py hook.py", "timeout": 30}]})
    end3 = codex_run.hook_hash("SessionEnd", {"matcher": "*", "hooks": [
        {"type": "command", "command": "py hook.py", "timeout": 3}]})
    assert end == end3
    # no matcher key at all when the group has none; default timeout 600
    bare = {"event_name": "stop", "hooks": [{"type": "command", "command": "x", "timeout": 600,
                                             "async": False}]}
    assert codex_run.hook_hash("Stop", {"hooks": [{"type": "command", "command": "x"}]}) == \
        "sha256:" + hashlib.sha256(json.dumps(bare, sort_keys=True, separators=(",", ":"))
                                   .encode()).hexdigest()


def _parse_overrides(args: list[str]) -> dict:
    """What Codex would read from the -c pairs (each value parsed as TOML)."""
    assert args[::2] == ["-c"] * (len(args) // 2)
    out = {}
    for kv in args[1::2]:
        key, value = kv.split("=", 1)
        out[key] = tomllib.loads(f"v = {value}")["v"]
    return out


def test_overrides_cover_every_event_with_trusted_hashes_and_disable_installed_keys():
    cmd = '/opt/py 3/bin/python -I -S "/x/spool/hook.py"'  # spaces and quotes survive TOML
    installed = ["/p/.codex/hooks.json:stop:1:0"]
    parsed = _parse_overrides(codex_run.overrides(cmd, installed))
    assert parsed["features.hooks"] is True
    for event in codex.EVENTS:
        groups = parsed[f"hooks.{event}"]
        assert groups == [codex.spool_group(event, cmd)]
        assert groups[0]["hooks"][0]["command"] == cmd
    state = parsed["hooks.state"]
    assert len(state) == len(codex.EVENTS) + 1
    for event in codex.EVENTS:
        key = f"/<session-flags>/config.toml:{codex.snake(event)}:0:0"
        assert state[key] == {"trusted_hash": codex_run.hook_hash(
            event, codex.spool_group(event, cmd))}
    assert state[installed[0]] == {"enabled": False}


def test_installed_keys_are_spool_handlers_only_at_their_positions(tmp_path):
    data = {"hooks": {"Stop": [{"hooks": [{"type": "command", "command": "other-tool"}]},
                               {"hooks": [{"type": "command",
                                           "command": "/py -I -S /a/spool/hook.py"}]}],
                      "PreToolUse": [{"matcher": "*", "hooks": [
                          {"type": "command", "command": "x"},
                          {"type": "command", "command": "python -m spool.hook"}]}]}}
    keys = codex_run.installed_keys([(tmp_path / "hooks.json", data), (tmp_path / "none", None)])
    assert sorted(keys) == sorted([f"{tmp_path}/hooks.json:stop:1:0",
                                   f"{tmp_path}/hooks.json:pre_tool_use:0:1"])


@pytest.mark.parametrize("argv, want", [
    ([], (None, [])),
    (["codex"], (None, [])),
    (["codex", "exec", "hi"], (None, ["exec", "hi"])),
    (["/opt/bin/codex", "exec"], ("/opt/bin/codex", ["exec"])),
    (["./codex-0.169", "-m", "x"], ("./codex-0.169", ["-m", "x"])),
    (["exec", "--json", "hi"], (None, ["exec", "--json", "hi"])),
])
def test_split_codex(argv, want):
    assert codex_run.split_codex(argv) == want


def test_overrides_go_before_any_subcommand():
    out = codex_run.with_overrides(["exec", "resume", "--last", "hi"], ["-c", "a=1"])
    assert out == ["-c", "a=1", "exec", "resume", "--last", "hi"]


def test_env_for_run_routes_this_run_only():
    base = {"PATH": "/bin", "SPOOL_SINKS": "infinium"}
    env = codex_run.env_for_run(base, sinks=["file,infinium", "file"], otlp_endpoint=None,
                                run_id="ci-42")
    assert env["SPOOL_SINKS"] == "file,infinium" and env["SPOOL_RUN_ID"] == "ci-42"
    assert base == {"PATH": "/bin", "SPOOL_SINKS": "infinium"}  # the caller's env untouched
    env = codex_run.env_for_run({}, sinks=None, otlp_endpoint="http://127.0.0.1:4318/v1/traces",
                                run_id=None, configured=("file",))
    assert env["SPOOL_SINKS"] == "file,otlp"
    assert env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] == "http://127.0.0.1:4318/v1/traces"
    assert "SPOOL_RUN_ID" not in codex_run.env_for_run({}, sinks=None, otlp_endpoint=None,
                                                       run_id=None)


def test_codex_cwd_follows_cd_option(tmp_path):
    assert codex_run.codex_cwd(["-C", "sub", "exec"], tmp_path) == (tmp_path / "sub").resolve()
    assert codex_run.codex_cwd(["--cd=/x", "exec"], tmp_path) == Path("/x")
    assert codex_run.codex_cwd(["exec", "hi"], tmp_path) == tmp_path


# --- bad input: a stand-in `codex` that records every call ------------------------------------


def fake_codex(tmp_path: Path, version: str, features_rc: int = 0) -> tuple[Path, Path]:
    log = tmp_path / "calls.log"
    script = tmp_path / "bin" / "codex"
    script.parent.mkdir()
    script.write_text(f"""#!/bin/sh
echo "$*" >> {log}
case "$1" in --version) echo "codex-cli {version}"; exit 0;; esac
for a in "$@"; do
  if [ "$a" = features ]; then
    [ {features_rc} -eq 0 ] || echo "Error: unknown configuration field hooks.state" >&2
    exit {features_rc}
  fi
done
echo "STARTED $*"
exit 7
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, log


def spool_run(args: list[str], cwd: Path, path: str | None = None, **env):
    e = dict(os.environ, **env)
    if path is not None:
        e["PATH"] = path
    return subprocess.run([SPOOL, "run", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env=e, stdin=subprocess.DEVNULL)


def test_too_old_codex_is_one_line_exit_2_and_never_started(tmp_path):
    script, log = fake_codex(tmp_path, "0.128.9")
    r = spool_run(["--", str(script), "exec", "hi"], tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "0.128.9" in r.stderr and "npm install" in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert "exec hi" not in log.read_text()  # only --version / the dry run


def test_codex_rejecting_the_overrides_is_one_line_exit_2(tmp_path):
    script, log = fake_codex(tmp_path, "0.169.0", features_rc=1)
    r = spool_run(["--", str(script), "exec", "hi"], tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "0.169.0" in r.stderr
    assert "unknown configuration field" in r.stderr
    assert "exec hi" not in log.read_text()


def test_no_codex_anywhere_is_one_line_exit_2(tmp_path):
    r = spool_run(["--", "codex", "exec", "hi"], tmp_path, path=str(tmp_path / "empty"),
                  HOME=str(tmp_path), NPM_CONFIG_PREFIX=str(tmp_path / "npm"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not found" in r.stderr, r.stderr


@pytest.mark.parametrize("args, says", [
    (["--sink", "nope"], "--sink 'nope' is not a known sink. Use one of: atif, file,"),
    (["--sink", "file,nope"], "--sink 'nope' is not a known sink."),
    (["--otlp-endpoint", "localhost:4318"], "--otlp-endpoint 'localhost:4318' is not"),
    (["--otlp-endpoint", "http://[::1"], "--otlp-endpoint 'http://[::1' is not a valid URL"),
])
def test_unknown_sink_or_bad_otlp_endpoint_is_one_line_exit_2_and_never_started(tmp_path, args,
                                                                                 says):
    script, log = fake_codex(tmp_path, "0.169.0")
    r = spool_run([*args, "--", str(script), "exec", "hi"], tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and says in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "STARTED" not in r.stdout
    assert not log.exists() or "exec hi" not in log.read_text()


def test_codex_found_on_path_gets_overrides_first_and_its_exit_code_is_spools(tmp_path):
    script, log = fake_codex(tmp_path, "0.169.0")
    r = spool_run(["--no-summary", "--", "codex", "exec", "hi"], tmp_path,
                  path=f"{script.parent}:{os.environ['PATH']}")
    assert r.returncode == 7, r.stderr  # the stand-in's own exit code
    started = [ln for ln in r.stdout.splitlines() if ln.startswith("STARTED")]
    assert len(started) == 1 and started[0].startswith("STARTED -c features.hooks=true -c ")
    assert started[0].endswith(" exec hi")
    # the dry run is remembered: a second run does not ask Codex again
    dry_runs = lambda: [ln for ln in log.read_text().splitlines()  # noqa: E731
                        if ln.endswith(" features list")]
    assert len(dry_runs()) == 1
    r = spool_run(["--no-summary", "--", str(script), "exec", "hi"], tmp_path)
    assert r.returncode == 7 and len(dry_runs()) == 1


# --- the summary --------------------------------------------------------------------------------


def _insert(engine, payloads: list[dict], cwd: str, at: float) -> None:
    from spool import ingest

    insert_raw(engine, payloads, at, step=0.0, cwd=cwd)
    ingest.parse_new(engine)


def test_summary_counts_only_events_after_the_mark_in_codex_dir(engine, tmp_path):
    from support.recorded import codex_like_session

    _insert(engine, codex_like_session("old", 1, cwd=str(tmp_path)), str(tmp_path), 1000.0)
    since = 1500.0
    _insert(engine, codex_like_session("new", 2, cwd=str(tmp_path / "sub")), str(tmp_path / "sub"),
            2000.0)
    _insert(engine, codex_like_session("elsewhere", 1, cwd="/other"), "/other", 2000.0)
    con = run_summary.connect(paths.db_path())
    try:
        act = run_summary.activity(con, since, str(tmp_path))
    finally:
        con.close()
    assert act["sessions"] == ["new"]
    assert act["turns"] == [("new", "new-t0"), ("new", "new-t1")]
    assert not run_summary.settled(act)  # not traced yet
    line = run_summary.summary_line(act, exit_code=0, waited=1.0, timed_out=True)
    assert line.startswith("spool run: 1 session, 2 turns, 24 tokens (in 20, cached 2, out 4)")
    assert "no traces yet" in line and "still in progress" in line


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT", "SIGHUP"])
def test_signals_reach_codex_and_its_exit_code_is_spools(tmp_path, signame):
    import signal

    log = tmp_path / "signals.log"
    script = tmp_path / "codex"
    script.write_text(f"""#!/bin/sh
case "$1" in --version) echo "codex-cli 0.169.0"; exit 0;; esac
for a in "$@"; do [ "$a" = features ] && exit 0; done
trap 'echo got {signame} >> {log}; exit 42' {signame[3:]}
echo started >> {log}
while :; do sleep 0.05; done
""")
    script.chmod(0o755)
    # a new session: no controlling terminal, so nothing but spool can deliver the signal
    proc = subprocess.Popen([SPOOL, "run", "--no-summary", "--", str(script)], cwd=tmp_path,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    def started():
        return log.exists() and "started" in log.read_text()

    wait_until(lambda: started() or proc.poll() is not None, 30, 0.02,
               what="the stand-in Codex to start")
    assert started(), proc.communicate()
    proc.send_signal(getattr(signal, signame))
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 42, err
    assert log.read_text().splitlines() == ["started", f"got {signame}"]


def test_codex_gets_the_terminal_and_a_typed_ctrl_c_reaches_it(tmp_path):
    """Under a pseudo-terminal: Codex's stdin/stdout are the terminal; Ctrl-C typed there
    reaches Codex (same foreground process group), spool survives it and exits with
    Codex's code.  (Two SIGINTs this close would merge: see the next test for the rule
    that keeps spool from sending a second one.)"""
    import pty
    import select

    log = tmp_path / "tty.log"
    script = tmp_path / "codex"
    script.write_text(f"""#!/bin/sh
case "$1" in --version) echo "codex-cli 0.169.0"; exit 0;; esac
for a in "$@"; do [ "$a" = features ] && exit 0; done
[ -t 0 ] && [ -t 1 ] && echo "stdio is a tty" >> {log}
n=0
trap 'n=$((n+1)); echo "INT $n" >> {log}' INT
echo ready >> {log}
i=0
while [ $i -lt 40 ]; do sleep 0.05; i=$((i+1)); done
exit 5
""")
    script.chmod(0o755)
    pid, fd = pty.fork()
    if pid == 0:  # the child: a new session whose controlling terminal is the pty
        os.chdir(tmp_path)
        os.execv(SPOOL, [SPOOL, "run", "--no-summary", "--", str(script)])
    wait_until(lambda: log.exists() and "ready" in log.read_text(), 30, 0.02,
               what="the stand-in Codex to start")
    os.write(fd, b"\x03")  # Ctrl-C typed at the terminal
    output = b""
    while True:
        r, _, _ = select.select([fd], [], [], 30)
        if not r:
            break
        try:
            chunk = os.read(fd, 1024)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 5, output
    assert log.read_text().splitlines() == ["stdio is a tty", "ready", "INT 1"]


def test_sigint_is_forwarded_only_when_the_terminal_did_not_deliver_it(tmp_path):
    import pty

    code = ("from spool.commands.run import _Forwarder; "
            "print('delivers' if _Forwarder._terminal_delivers() else 'forward')")
    pid, fd = pty.fork()
    if pid == 0:  # foreground process group of a terminal: Ctrl-C reaches Codex directly
        os.execv(sys.executable, [sys.executable, "-c", code])
    out = b""
    while True:
        try:
            chunk = os.read(fd, 1024)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.waitpid(pid, 0)
    assert out.strip() == b"delivers"
    # no controlling terminal (CI, a supervisor's kill): spool must forward it
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       start_new_session=True, stdin=subprocess.DEVNULL)
    assert r.stdout.strip() == "forward", r.stderr


def test_events_still_in_overflow_files_keep_the_run_unsettled(spool_home):
    spool_home.mkdir(parents=True, exist_ok=True)
    assert not run_summary.overflow_waiting(spool_home)
    assert run_summary.settled(dict(run_summary.NOTHING, overflow=False))
    (spool_home / "overflow-123.jsonl").write_text("{}\n")
    assert run_summary.overflow_waiting(spool_home)
    assert not run_summary.settled(dict(run_summary.NOTHING, overflow=True))


def test_run_id_and_routing_reach_codex_environment(tmp_path):
    script = tmp_path / "codex"
    script.write_text("""#!/bin/sh
case "$1" in --version) echo "codex-cli 0.169.0"; exit 0;; esac
for a in "$@"; do [ "$a" = features ] && exit 0; done
echo "run=$SPOOL_RUN_ID sinks=$SPOOL_SINKS otlp=$OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
""")
    script.chmod(0o755)
    r = spool_run(["--run-id", "ci-7", "--sink", "file", "--otlp-endpoint",
                   "http://127.0.0.1:4318/v1/traces", "--no-summary", "--", str(script)], tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "run=ci-7 sinks=file,otlp otlp=http://127.0.0.1:4318/v1/traces\n"
    assert r.stderr == ""  # --no-summary: not a word of spool's own
