"""The Codex hook: stdin -> one row in ``raw_events``.  The hot path.

Codex runs this synchronously on every hook event, so it does as little as
possible and imports the standard library only (a test enforces it):

* read all of stdin (kept up to MAX_PAYLOAD bytes; a larger payload is kept
  truncated, flagged, with its original size), stamp the arrival time;
* one ``INSERT`` in a ``BEGIN IMMEDIATE`` transaction (no JSON parsing here:
  the worker's ingest step parses, validates and quarantines);
* the INSERT is conditional on the project not being paused (``pauses``);
* if the database cannot be written - missing (first event on this machine),
  locked past the timeout, read-only, corrupt, disk full, wrong schema - the
  event goes, fsynced, to an ``overflow-*.jsonl`` file in SPOOL_HOME (or a
  per-user fallback directory) that the worker ingests exactly once;
* on SessionStart, Stop and SessionEnd, or whenever it had to overflow, it
  starts the worker (detached) if none holds the worker lock;
* prints nothing, always exits 0; failures leave a line in hook-errors.log.

``spool init`` installs it as ``<python> -I -S <path>/hook.py``: isolated
mode and no ``site`` import, because .pth files (editable installs, sandbox
helpers) can cost 20-40 ms per event.  ``python -m spool.hook`` works as well.

The raw SQL below must match spool/schema.py; tests/test_schema.py checks it.
"""
import os
import sys
import time

def _env_seconds(name, default):
    """A number of seconds from the environment; anything unusable means the default
    (the hook must never fail on a typo)."""
    try:
        value = float(os.environ.get(name) or default)
    except ValueError:
        return default
    return value if 0 <= value < 1e9 else default


MAX_PAYLOAD = 16 * 1024 * 1024
BUSY_TIMEOUT_S = _env_seconds("SPOOL_HOOK_BUSY_TIMEOUT", 2.0)
IDLE_EXIT_S = "%g" % _env_seconds("SPOOL_WORKER_IDLE_EXIT", 120.0)
DB_NAME = "spool.db"
WORKER_LOCK = "worker.lock"
ERROR_LOG = "hook-errors.log"
WORKER_STDERR = "worker.stderr"

INSERT_SQL = (
    "INSERT INTO raw_events (received_at, source, cwd, payload, size, truncated) "
    "SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE NOT EXISTS ("
    "SELECT 1 FROM pauses WHERE ?3 = project "
    "OR substr(?3, 1, length(project) + 1) = project || '/')"
)
# The hook's own insert: INSERT_SQL plus what the hook knows of its process (ingest and
# import build their inserts from INSERT_SQL).
HOOK_INSERT_SQL = INSERT_SQL.replace(
    "truncated) SELECT ?1, ?2, ?3, ?4, ?5, ?6 ",
    "truncated, run_id, codex_pid, codex_start) SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9 ")
# Events after which a worker should be running (aggregate / deliver soon).
_WAKE_MARKERS = (b'"SessionStart"', b'"Stop"', b'"SessionEnd"')
_SHELLS = (b"sh", b"bash", b"dash", b"zsh", b"ksh", b"fish")


def spool_home():
    """Same answer as spool.paths.spool_home(), without platformdirs."""
    env = os.environ.get("SPOOL_HOME")
    if env:
        return os.path.expanduser(env)
    if sys.platform == "darwin":
        return os.path.expanduser("~/Library/Application Support/spool")
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser("~\\AppData\\Local")
        return os.path.join(base, "spool")
    base = os.environ.get("XDG_DATA_HOME", "").strip() or os.path.expanduser("~/.local/share")
    return os.path.join(base, "spool")


def fallback_dir(home=None):
    """Same answer as spool.paths.fallback_overflow_dir(home).

    Per user and per spool home (a checksum of its path), so a worker only ever
    ingests the overflow of its own spool (a `spool demo` in a temporary home
    never takes a real spool's events)."""
    import zlib

    tag = "%08x" % zlib.crc32(os.fsencode(home or spool_home()))
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isdir(base):
        return os.path.join(base, "spool-overflow-" + tag)
    import tempfile

    return os.path.join(tempfile.gettempdir(), "spool-overflow-%d-%s" % (os.getuid(), tag))


def private_dir(path):
    """Create ``path`` 0700 if needed; raise OSError unless it is a real directory
    of ours that nobody else can write (a shared /tmp can hold a planted one)."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.lstat(path)
    if (not (st.st_mode & 0o170000 == 0o040000) or st.st_uid != os.getuid()
            or st.st_mode & 0o022):
        raise OSError("refusing %s: not a private directory of this user" % path)
    return path


def read_stdin(stream):
    """(data, original size, truncated) - never more than MAX_PAYLOAD kept."""
    data = stream.read(MAX_PAYLOAD + 1) or b""
    if len(data) <= MAX_PAYLOAD:
        return data, len(data), 0
    size = len(data)
    data = data[:MAX_PAYLOAD]
    while True:  # drain the rest so Codex never blocks writing to us
        chunk = stream.read(1 << 20)
        if not chunk:
            break
        size += len(chunk)
    return data, size, 1


def codex_process():
    """(pid, start time in clock ticks since boot) of the Codex process this hook runs
    under: its parent, or the parent's parent when Codex ran the hook through a shell.
    (None, None) where /proc cannot tell (not Linux)."""
    pid, found = os.getppid(), (None, None)
    for _ in range(3):
        try:
            with open("/proc/%d/stat" % pid, "rb") as f:
                stat = f.read()
            end = stat.rindex(b")")
            fields = stat[end + 2:].split()
            found = (pid, int(fields[19]))
            if stat[stat.index(b"(") + 1:end] not in _SHELLS or fields[1] in (b"0", b"1"):
                break
            pid = int(fields[1])  # a shell Codex ran us with: Codex is its parent
        except (OSError, ValueError, IndexError):
            break
    return found


def _uri(path):
    return "file:" + path.replace("%", "%25").replace("?", "%3f").replace("#", "%23") + "?mode=rw"


def insert(home, received_at, source, cwd, payload, size, truncated, proc=(None, None, None)):
    """One INSERT in BEGIN IMMEDIATE.  Raises on any database problem.
    ``proc``: (run id, Codex pid, its start time), None where unknown."""
    import sqlite3

    path = os.path.join(home, DB_NAME)
    # mode=rw: never create the database (the worker creates and migrates it).
    conn = sqlite3.connect(_uri(path), uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        # synchronous stays at SQLite's default FULL: the raw event is the
        # one thing nothing else can recreate, so its commit is fsynced.
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(HOOK_INSERT_SQL,
                     (received_at, source, cwd, payload, size, truncated) + tuple(proc))
        conn.execute("COMMIT")
    finally:
        conn.close()


def _write_private(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _home_or_fallback(home, write):
    """``write(directory)`` in the spool home, else in the private fallback directory
    (each created first); returns its result, or raises the fallback's OSError."""
    last = None
    for directory in (home, fallback_dir(home)):
        try:
            if directory == home:
                os.makedirs(directory, mode=0o700, exist_ok=True)
            else:
                private_dir(directory)
            return write(directory)
        except OSError as exc:
            last = exc
    raise last


def write_overflow(home, received_at, cwd, payload, size, truncated, reason,
                   proc=(None, None, None)):
    """Keep the event in an overflow file; returns the directory used.
    ``proc``: (run id, Codex pid, its start time) as for ``insert``, restored at ingest."""
    import base64
    import json

    key = "%d-%d-%s" % (time.time_ns(), os.getpid(), os.urandom(6).hex())
    record = {
        "v": 1,
        "key": key,
        "received_at": received_at,
        "cwd": cwd,
        "size": size,
        "truncated": truncated,
        "reason": reason,
        "payload_b64": base64.b64encode(payload).decode("ascii"),
    }
    run_id, codex_pid, codex_start = proc
    if run_id is not None:
        record["run_id"] = run_id
    if codex_pid is not None:
        record["codex_pid"] = codex_pid
        record["codex_start"] = codex_start
    line = (json.dumps(record, separators=(",", ":")) + "\n").encode("utf-8")

    def publish(directory):
        tmp = os.path.join(directory, ".overflow-%s.tmp" % key)
        _write_private(tmp, line)
        # The rename publishes a complete file: the worker never sees half of one.
        os.rename(tmp, os.path.join(directory, "overflow-%s.jsonl" % key))
        return directory

    return _home_or_fallback(home, publish)


def log_error(home, message):
    """Leave a line `spool errors` can show; never raises."""
    line = ("%s\t%d\t%s\n" % (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), os.getpid(),
                               message.replace("\n", " "))).encode("utf-8", "replace")

    def append(directory):
        fd = os.open(os.path.join(directory, ERROR_LOG),
                     os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    try:
        _home_or_fallback(home, append)
    except OSError:
        pass


def start_worker(home):
    """Start a detached worker unless one holds the lock.  Microseconds if one runs.

    The hook takes the worker lock itself and hands the locked descriptor to
    the worker it spawns (flock locks belong to the open file, which the child
    inherits), so any number of racing hooks start exactly one worker.
    """
    if os.environ.get("SPOOL_NO_AUTOSTART", "") not in ("", "0") or sys.platform == "win32":
        return False
    import fcntl

    os.makedirs(home, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(home, WORKER_LOCK), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False  # a worker is running
    python = sys.executable
    pid = os.fork()
    if pid == 0:  # child: detach completely, then exec the worker
        try:
            os.setsid()
            if os.fork() != 0:
                os._exit(0)  # the first child exits at once: no zombie, no tie to Codex
            null = os.open(os.devnull, os.O_RDWR)
            # A worker that cannot even start (a broken install) says why here.
            err = os.open(os.path.join(home, WORKER_STDERR),
                          os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.dup2(null, 0)
            os.dup2(null, 1)
            os.dup2(err, 2)
            os.set_inheritable(fd, True)
            # Not from the project directory: `-m` would import a `spool`
            # package or module found there instead of ours, and a daemon
            # should not keep the directory busy.  (No -I: it would also hide
            # a `pip install --user` spool from the worker.)
            os.chdir("/")
            os.execv(python, [python, "-m", "spool", "worker",
                              "--idle-exit", IDLE_EXIT_S, "--lock-fd", str(fd)])
        finally:
            os._exit(0)
    os.close(fd)  # the grandchild keeps the lock
    os.waitpid(pid, 0)
    return True


def handle(data, size, truncated, cwd, home, received_at, source="hook",
           proc=(None, None, None)):
    """Record one event.  Returns "db" or "overflow"; raises only if both failed."""
    where = "db"
    first = False
    try:
        insert(home, received_at, source, cwd, data, size, truncated, proc)
    except Exception as exc:  # any database problem: keep the event anyway
        reason = "%s: %s" % (type(exc).__name__, exc)
        write_overflow(home, received_at, cwd, data, size, truncated, reason, proc)
        first = not os.path.exists(os.path.join(home, DB_NAME))
        if not first:
            log_error(home, "database not writable, event kept in overflow (%s)" % reason)
        where = "overflow"
    # No database yet (the first event on this machine): the worker creates it.
    # Otherwise only the session's milestones check for a worker - a broken
    # database must not fork a worker for every event.
    if first or any(m in data for m in _WAKE_MARKERS):
        try:
            start_worker(home)
        except Exception as exc:
            log_error(home, "could not start the worker: %s: %s" % (type(exc).__name__, exc))
    return where


def main():
    received_at = time.time()
    home = None
    try:
        home = spool_home()
        try:
            data, size, truncated = read_stdin(sys.stdin.buffer)
        except Exception as exc:
            data, size, truncated = b"", 0, 0
            log_error(home, "could not read stdin: %s" % exc)
        try:
            cwd = os.getcwd()
            try:
                cwd.encode("utf-8")
            except UnicodeEncodeError:  # an undecodable path: store it readable
                cwd = cwd.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        except OSError:
            cwd = None
        try:  # SPOOL_RUN_ID and the Codex process: a few microseconds, never fatal
            proc = (os.environ.get("SPOOL_RUN_ID") or None,) + codex_process()
        except Exception:
            proc = (None, None, None)
        handle(data, size, truncated, cwd, home, received_at, proc=proc)
    except BaseException as exc:  # never exit non-zero, never print
        try:
            log_error(home or spool_home(), "event lost: %s: %s" % (type(exc).__name__, exc))
        except BaseException:
            pass
    os._exit(0)  # skip interpreter teardown: nothing is buffered, nothing to flush


if __name__ == "__main__":
    main()
