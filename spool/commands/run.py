"""``spool run [OPTIONS] [--] codex ARGS…``: trace one Codex run with nothing installed.

1. finds Codex (the first argument when it is a path to a Codex binary, else
   ``codex`` as the shell would, else the npm-global/Homebrew places), checks it
   is >= 0.129 and accepts the hook overrides (``codex -c … features list``,
   remembered per binary in SPOOL_HOME/codex-run-check.json): on failure one
   line and exit 2, Codex not started;
2. runs Codex with spool's hooks as ``-c`` overrides before any subcommand
   (spool/codex_run.py); spool hooks installed in the project's or the user's
   hooks.json are switched off for the run (no double capture).  Nothing is
   written into the project or $CODEX_HOME;
3. Codex inherits the terminal and stdio; SIGTERM/SIGHUP (and SIGINT when the
   terminal did not already deliver it to Codex) are forwarded; Codex's exit
   code is spool's (128+N when a signal N ended it);
4. then waits up to ``--wait`` seconds for this run's traces (hook events
   received since Codex started, in Codex's directory; a concurrent Codex in
   the same directory would be counted too) to be delivered and
   prints one summary line on stderr (never stdout).
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

from ..app import app

RUN_HELP = ("Run Codex with spool's hooks for this run only (nothing installed): "
            "spool run [OPTIONS] [--] codex ARGS...")
CHECK_FILE = "codex-run-check.json"
UPGRADE = "Upgrade it with `npm install -g @openai/codex@latest`, then run again."


def _fail(message: str) -> None:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(2)


def _check_routing(sinks: list[str] | None, otlp_endpoint: str | None) -> None:
    """A --sink no worker knows, or an --otlp-endpoint that is not a URL: one line, exit 2,
    before Codex starts (else the run's traces would be held or lost after it)."""
    if sinks:
        from ..sinks import SINKS

        names = [s.strip() for part in sinks for s in part.split(",") if s.strip()]
        unknown = [n for n in names if n not in SINKS]
        if unknown:
            _fail(f"--sink {unknown[0]!r} is not a known sink. "
                  f"Use one of: {', '.join(sorted(SINKS))}.")
    if otlp_endpoint is not None:
        from ..sinks.infinium import url_problem

        problem = url_problem(otlp_endpoint)
        if problem:
            _fail(f"--otlp-endpoint {problem}. Pass the full traces URL, "
                  "e.g. --otlp-endpoint http://localhost:4318/v1/traces.")


def _find(binary: str | None) -> Path:
    import shutil

    from .. import codex, codex_run
    from ..errors import SpoolError

    if binary:
        try:
            return codex.find_codex(binary)
        except SpoolError:
            _fail(f"no Codex binary at {binary}. Check the path, or install Codex with "
                  "`npm install -g @openai/codex` and use `spool run -- codex ...`.")
    found = shutil.which("codex")
    if found:
        return Path(found)
    for d in codex_run.fallback_dirs(dict(os.environ), Path.home()):
        p = d / "codex"
        if p.is_file() and os.access(p, os.X_OK):
            return p
    _fail("the Codex CLI (`codex`) was not found on PATH nor in the npm-global/Homebrew "
          "places. Install it with `npm install -g @openai/codex`, or pass its path: "
          "spool run -- /path/to/codex ...")
    raise AssertionError  # unreachable


def _check_key(binary: Path, overrides: list[str]) -> str:
    real = binary.resolve()
    st = real.stat()
    return hashlib.sha256(json.dumps([str(real), st.st_mtime_ns, st.st_size,
                                      overrides]).encode()).hexdigest()


def _checked(binary: Path, overrides: list[str], cwd: Path) -> str:
    """Codex's version once it is known to take the overrides; exit 2 otherwise."""
    from .. import codex, codex_run, paths

    cache = paths.spool_home() / CHECK_FILE
    key = _check_key(binary, overrides)
    try:
        known = json.loads(cache.read_text("utf-8"))
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and isinstance(known.get(key), str):
        return known[key]
    # The version and the dry run of the overrides, side by side (~0.5 s each).
    probe = subprocess.Popen([str(binary), *overrides, "features", "list"], cwd=str(cwd),
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    version = codex.codex_version(binary)
    try:
        _out, err = probe.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        probe.kill()
        probe.communicate()
        err, probe.returncode = "no answer in 60 s", -1
    if version is None:
        _fail(f"cannot tell the version of {binary} (`{binary} --version` failed). {UPGRADE}")
    if codex_run.too_old(version):
        _fail(f"Codex {version} at {binary} is too old for hooks (spool run needs >= "
              f"{'.'.join(map(str, codex.MIN_HOOK_TRUST_VERSION))}). {UPGRADE}")
    if probe.returncode != 0:
        lines = [ln.strip() for ln in (err or "").splitlines() if ln.strip()]
        why = lines[-1] if lines else f"exit {probe.returncode}"
        _fail(f"Codex {version} at {binary} rejected spool's hook overrides ({why}). "
              f"{UPGRADE} Or use `spool init` in the project instead.")
    try:
        paths.ensure_home()
        known = known if isinstance(known, dict) else {}
        known[key] = version
        from ..files import write_atomic

        write_atomic(cache, json.dumps(known).encode(), 0o600)
    except OSError:
        pass  # only a cache
    return version


def _installed_keys(workdir: Path) -> list[str]:
    """Trust keys of spool hooks installed in hooks.json files Codex would load here."""
    from .. import codex, codex_run
    from ..errors import SpoolError

    files = []
    candidates = [codex.codex_home() / "hooks.json"]
    candidates += [codex.hooks_path(d) for d in (workdir, *workdir.parents)]
    for path in candidates:
        try:
            data = codex.read_hooks(path)
        except SpoolError:
            continue  # Codex will complain about a broken file itself
        if data is not None:
            files.append((path.resolve(), data))
    return codex_run.installed_keys(files)


class _Forwarder:
    """Forward SIGTERM, SIGHUP, SIGINT and SIGQUIT to Codex while it runs.

    A Ctrl-C typed in the terminal already reaches Codex (same process group,
    in the foreground): SIGINT is forwarded only when that is not the case.
    """

    SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None),
                                getattr(signal, "SIGHUP", None), getattr(signal, "SIGQUIT", None))
                    if s is not None)

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.pending: list[int] = []
        self.saved: dict = {}

    def start(self, argv: list[str], env: dict) -> subprocess.Popen:
        self.proc = subprocess.Popen(argv, env=env)
        for signum in self.pending:  # arrived while Codex was starting
            self.proc.send_signal(signum)
        return self.proc

    @staticmethod
    def _terminal_delivers() -> bool:
        try:
            fd = os.open("/dev/tty", os.O_RDONLY | getattr(os, "O_NOCTTY", 0))
        except OSError:
            return False
        try:
            return os.tcgetpgrp(fd) == os.getpgrp()
        except OSError:
            return False
        finally:
            os.close(fd)

    def _handle(self, signum, _frame) -> None:
        if signum in (signal.SIGINT, getattr(signal, "SIGQUIT", -1)) and self._terminal_delivers():
            return
        if self.proc is None:
            self.pending.append(signum)
            return
        try:
            self.proc.send_signal(signum)
        except OSError:
            pass

    def __enter__(self) -> "_Forwarder":
        for s in self.SIGNALS:
            self.saved[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self.saved.items():
            signal.signal(s, h)


def _summary(since: float, workdir: Path, wait: float, exit_code: int, run_id: str | None) -> str:
    from .. import paths, run_summary
    from ..app import wake_worker

    wake_worker()  # ingest/trace/deliver now (a no-op when a worker runs or autostart is off)
    path = paths.db_path()
    start = time.monotonic()
    con = None
    try:
        while True:
            if con is None and path.exists():  # the worker creates it with the first events
                con = run_summary.connect(path)
            activity = dict(run_summary.activity(con, since, str(workdir)) if con is not None
                            else run_summary.NOTHING)
            activity["overflow"] = run_summary.overflow_waiting(paths.spool_home())
            waited = time.monotonic() - start
            done = (con is not None or not activity["overflow"]) and run_summary.settled(activity)
            if done or waited >= wait:
                return run_summary.summary_line(activity, exit_code=exit_code, waited=waited,
                                                timed_out=not done, run_id=run_id)
            time.sleep(min(0.2, max(0.0, wait - waited)))
    finally:
        if con is not None:
            con.close()


@app.command(name="run", help=RUN_HELP,
             context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True})
def run(
    args: Optional[List[str]] = typer.Argument(None, metavar="[--] codex ARGS...",
                                               help="codex (or a path to a Codex binary) and "
                                                    "its arguments; none: the Codex TUI."),
    sink: Optional[List[str]] = typer.Option(None, "--sink",
                                             help="Sink(s) for this run (repeat or comma list)."),
    otlp_endpoint: Optional[str] = typer.Option(None, "--otlp-endpoint",
                                                help="Also send this run's traces to this OTLP "
                                                     "traces endpoint."),
    run_id: Optional[str] = typer.Option(None, "--run-id",
                                         help="Group this run's sessions (SPOOL_RUN_ID)."),
    wait: float = typer.Option(5.0, "--wait", min=0,
                               help="Seconds to wait after Codex exits for delivery."),
    no_summary: bool = typer.Option(False, "--no-summary", help="Print no summary line."),
) -> None:
    from .. import codex, codex_run, config
    from ..errors import SpoolError

    _check_routing(sink, otlp_endpoint)
    binary_arg, codex_args = codex_run.split_codex(list(args or []))
    binary = _find(binary_arg)
    cwd = Path.cwd().resolve()
    workdir = codex_run.codex_cwd(codex_args, cwd)
    command = codex.hook_command()
    mine = codex_run.overrides(command)
    version = _checked(binary, mine, cwd)
    argv = [str(binary), *codex_run.with_overrides(
        codex_args, codex_run.overrides(command, _installed_keys(workdir),
                                       codex_run.keeps_rollout(codex_args)))]
    configured: tuple[str, ...] = ()
    if otlp_endpoint and not sink:
        try:
            configured = config.load(workdir).effective_sinks()
        except SpoolError as exc:  # spool's own check: exit 1, Codex not started
            typer.echo(f"Error: {exc.reason} {exc.instruction}".rstrip(), err=True)
            raise typer.Exit(1)
    env = codex_run.env_for_run(dict(os.environ), sinks=sink, otlp_endpoint=otlp_endpoint,
                                run_id=run_id, configured=configured)
    started = time.time()  # this run's events: received since then, in Codex's directory
    with _Forwarder() as forwarder:  # installed first: a signal during the start is kept
        try:
            proc = forwarder.start(argv, env)
        except OSError as exc:
            _fail(f"cannot start Codex {version} at {binary}: {exc}.")
            raise AssertionError  # unreachable
        code = proc.wait()
    exit_code = code if code >= 0 else 128 - code
    if not no_summary:
        try:
            line = _summary(started, workdir, wait, exit_code, run_id)
        except KeyboardInterrupt:  # Ctrl-C during the wait: no summary, Codex's code still
            line = "spool run: summary skipped (interrupted); `spool history` shows the traces"
        except Exception as exc:  # the summary never changes Codex's exit code
            line = f"spool run: no summary ({type(exc).__name__}: {exc})"
        sys.stdout.flush()
        typer.echo(line, err=True)
    raise typer.Exit(exit_code)
