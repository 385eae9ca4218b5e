"""Opening the spool database: engine, pragmas, transactions, migrations.

Pragmas on every connection:

* ``journal_mode=WAL``: readers (CLI) never block the writers (hooks, worker).
* ``busy_timeout``: writers wait for each other instead of failing.
* ``foreign_keys=ON``.
* ``synchronous=NORMAL`` for the worker and CLI: in WAL mode an application
  crash loses nothing committed; only an OS crash / power cut can roll back the
  last commits, and everything the worker writes is re-derivable from raw
  events.  The hook uses ``FULL`` (see spool/hook.py): the raw event is the one
  thing nothing else can recreate.

Every writing transaction starts with ``BEGIN IMMEDIATE`` (``write()``), so
it takes the write lock up front and waits on busy_timeout instead of failing
with SQLITE_BUSY half-way; reads use a deferred ``BEGIN`` (``read()``).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Iterator

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.pool import NullPool

from . import paths
from .errors import SpoolError
from .schema import HEAD_REVISION

BUSY_TIMEOUT_MS = 10_000


def _on_connect(dbapi_conn, _record) -> None:
    # Let us issue BEGIN ourselves (pysqlite's implicit transactions would
    # start a DEFERRED one).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _on_begin(conn: Connection) -> None:
    mode = conn.get_execution_options().get("spool_begin", "IMMEDIATE")
    conn.exec_driver_sql(f"BEGIN {mode}")


def make_engine(path: Path | str) -> Engine:
    """An engine for the spool database at ``path`` (no migration)."""
    engine = create_engine(f"sqlite:///{path}", poolclass=NullPool)
    event.listen(engine, "connect", _on_connect)
    event.listen(engine, "begin", _on_begin)
    return engine


def _sqlite_uri(path: Path | str, **params: str) -> str:
    quoted = str(path).replace("%", "%25").replace("?", "%3f").replace("#", "%23")
    return f"file:{quoted}?" + "&".join(f"{k}={v}" for k, v in params.items())


def make_read_only_engine(path: Path | str) -> Engine:
    """An engine that only reads the database at ``path`` (a read-only spool home):
    ``mode=ro``, and ``immutable=1`` when SQLite cannot make its -shm file there (nobody
    can write to that directory, so nobody changes the file underneath)."""
    import sqlite3

    params = {"mode": "ro"}
    try:
        probe = sqlite3.connect(_sqlite_uri(path, **params), uri=True)
        try:
            probe.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            probe.close()
    except sqlite3.OperationalError:
        params["immutable"] = "1"
    uri = _sqlite_uri(path, **params)
    engine = create_engine("sqlite://", poolclass=NullPool,
                           creator=lambda: sqlite3.connect(uri, uri=True, check_same_thread=False))
    event.listen(engine, "connect", _on_connect_read_only)
    event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN DEFERRED"))
    engine.spool_read_only = path  # type: ignore[attr-defined]
    return engine


def _on_connect_read_only(dbapi_conn, _record) -> None:
    dbapi_conn.isolation_level = None
    dbapi_conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    dbapi_conn.execute("PRAGMA query_only=1")


def read_only_error(path: Path | str) -> SpoolError:
    home = Path(path).parent
    return SpoolError(f"the spool home {home} is read-only: spool can read its database but "
                      "not change it.",
                      f"Make {home} writable (or set SPOOL_HOME to a writable directory), "
                      "then run the command again.")


@contextmanager
def write(engine: Engine) -> Iterator[Connection]:
    """One ``BEGIN IMMEDIATE`` transaction; commits on success."""
    ro = getattr(engine, "spool_read_only", None)
    if ro is not None:
        raise read_only_error(ro)
    with engine.connect() as conn:
        with conn.begin():
            yield conn


@contextmanager
def read(engine: Engine) -> Iterator[Connection]:
    """A short deferred read transaction (never takes the write lock)."""
    with engine.connect().execution_options(spool_begin="DEFERRED") as conn:
        with conn.begin():
            yield conn


def _alembic_config(path: Path):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("spool._migrations")))
    cfg.set_main_option("sqlalchemy.url", f"sqlite:///{path}")
    cfg.attributes["configure_logger"] = False
    return cfg


def current_revision(engine: Engine) -> str | None:
    with read(engine) as conn:
        exists = conn.execute(
            text("SELECT 1 FROM sqlite_master WHERE type='table' AND name='alembic_version'")
        ).first()
        if not exists:
            return None
        row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
        return row[0] if row else None


def known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config(Path("unused.db")))
    return {rev.revision for rev in script.walk_revisions()}


def _stamped_revision(path: Path) -> str | None:
    """The Alembic revision stamped in the database file, read with plain sqlite3."""
    import sqlite3

    if not Path(path).exists():
        return None
    conn = sqlite3.connect(_sqlite_uri(path, mode="ro"), uri=True,
                           timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.OperationalError:
        return None  # no alembic_version table yet
    finally:
        conn.close()
    return row[0] if row else None


class NewerSchemaError(SpoolError):
    pass


def upgrade(path: Path, revision: str = "head") -> None:
    """Create or upgrade the database at ``path`` to ``revision``.

    Idempotent.  A database stamped by a newer spool (a revision this spool
    does not know) raises NewerSchemaError instead of being touched.
    """
    rev = _stamped_revision(path)
    if rev == HEAD_REVISION and revision == "head":
        return  # the common case: no Alembic import at all
    from alembic import command

    if rev is not None and rev not in known_revisions():
        raise NewerSchemaError(
            f"the spool database {path} was created by a newer spool (schema {rev}).",
            "Upgrade spool (pip install -U spool) or point SPOOL_HOME somewhere else.",
        )
    if not Path(path).exists():
        _create(Path(path), revision)
        return
    command.upgrade(_alembic_config(path), revision)


def _create(path: Path, revision: str) -> None:
    """Build a new database in a temporary file, then link it into place.

    Nobody ever sees a half-built database (a hook finds no file and uses
    overflow until the complete one appears), and two processes creating it at
    once cannot trip over each other: the first link wins, the other's copy is
    thrown away.
    """
    from alembic import command

    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        command.upgrade(_alembic_config(tmp), revision)
        engine = make_engine(tmp)  # switch it to WAL before anyone else opens it
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        engine.dispose()
        os.chmod(tmp, 0o600)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process created it first: use theirs
    finally:
        for suffix in ("", "-wal", "-shm", "-journal"):
            try:
                os.unlink(str(tmp) + suffix)
            except FileNotFoundError:
                pass
    upgrade(path, revision)  # theirs may be older or newer: check it like any other


def downgrade(path: Path, revision: str) -> None:
    from alembic import command

    command.downgrade(_alembic_config(path), revision)


class CorruptDatabaseError(SpoolError):
    pass


def open_db(home: Path | None = None, migrate: bool = True) -> Engine:
    """The engine every spool command uses: home created 0700, DB at head, 0600.

    A database SQLite cannot read raises CorruptDatabaseError (a SpoolError:
    one line, with what to do) instead of a driver traceback.
    """
    import sqlite3

    from sqlalchemy.exc import DatabaseError as SADatabaseError

    home = home or paths.spool_home()
    try:
        if not _writable(home):
            return _open_read_only(home)
        return _open_db(home, migrate)
    except OSError as exc:  # the home cannot be created or written
        raise SpoolError(f"cannot use the spool home {home} ({exc.strerror or exc}).",
                         "Set SPOOL_HOME to a directory you can write (or fix the permissions "
                         "of this one), then run the command again.") from None
    except (sqlite3.DatabaseError, SADatabaseError) as exc:
        path = paths.db_path(home or paths.spool_home())
        text_ = str(getattr(exc, "orig", exc))
        if "locked" in text_ or "busy" in text_:
            raise SpoolError(f"the spool database {path} is busy ({text_}).",
                             "Try again in a moment; if it persists, run `spool doctor`.") from None
        raise CorruptDatabaseError(
            f"the spool database {path} cannot be read ({text_}).",
            f"Move it aside (mv {path} {path}.bad): spool creates a new one, and the hooks "
            "have kept every event since in overflow files, which the worker ingests.") from None


def _writable(home: Path) -> bool:
    """False for an existing spool home (or database file) spool may not write."""
    if not home.is_dir():
        return True  # to be created (an OSError then says why it cannot be)
    path = paths.db_path(home)
    return os.access(home, os.W_OK | os.X_OK) and (
        not path.exists() or os.access(path, os.R_OK | os.W_OK))


def _open_read_only(home: Path) -> Engine:
    """A read-only home: read the database that is there (it is fine), change nothing."""
    path = paths.db_path(home)
    if not path.exists():
        raise SpoolError(f"the spool home {home} is read-only and holds no database.",
                         f"Make {home} writable, or set SPOOL_HOME to a writable directory.")
    engine = make_read_only_engine(path)
    with engine.connect() as conn:
        try:
            rev = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
        except Exception:  # noqa: BLE001 - no table: not a spool database at head
            rev = None
    if rev != HEAD_REVISION:
        engine.dispose()
        raise SpoolError(f"the spool database {path} needs an upgrade (schema {rev}), but "
                         f"{home} is read-only.",
                         f"Make {home} writable and run the command again.")
    return engine


def _open_db(home: Path | None, migrate: bool) -> Engine:
    home = paths.ensure_home(home or paths.spool_home())
    path = paths.db_path(home)
    old_umask = os.umask(0o077)
    try:
        if migrate:
            upgrade(path)
        engine = make_engine(path)
        with engine.connect() as conn:  # creates the file if migrate=False
            conn.exec_driver_sql("SELECT 1")
    finally:
        os.umask(old_umask)
    for suffix in ("", "-wal", "-shm"):
        p = Path(str(path) + suffix)
        if p.exists():
            paths.secure_file(p)
    return engine
