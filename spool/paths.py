"""Where spool keeps its files.

``SPOOL_HOME`` (env) wins; otherwise the platform's user data dir from
platformdirs.  ``spool/hook.py`` recomputes the same path with the standard
library only (it must not import platformdirs); ``tests/test_paths.py`` proves
the two agree.

`spool usage` answers through ``db_file()`` and is timed against ccusage, so
this module imports neither pathlib (with urllib.parse and ipaddress, ~7 ms)
nor platformdirs (tempfile, shutil and the compression modules, ~8 ms) until a
function needs them: platformdirs only when ``SPOOL_HOME`` is unset.
"""
from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

APP_NAME = "spool"
DB_NAME = "spool.db"
WORKER_LOCK = "worker.lock"
HOOK_ERROR_LOG = "hook-errors.log"
WORKER_LOG = "worker.log"
OVERFLOW_PREFIX = "overflow-"


def home_dir() -> str:
    """The spool home's path as a string."""
    env = os.environ.get("SPOOL_HOME")
    if env:
        return os.path.expanduser(env)
    import platformdirs

    return platformdirs.user_data_dir(APP_NAME, appauthor=False)


def spool_home() -> Path:
    from pathlib import Path

    return Path(home_dir())


def ensure_home(home: Path | None = None) -> Path:
    """Create the spool home 0700 (and tighten it if it already exists)."""
    home = home or spool_home()
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        if (home.stat().st_mode & 0o777) != 0o700:
            os.chmod(home, 0o700)
    except OSError:
        pass
    return home


def db_path(home: Path | None = None) -> Path:
    return (home or spool_home()) / DB_NAME


def db_file() -> str:
    """``db_path()`` as a string, without pathlib."""
    return os.path.join(home_dir(), DB_NAME)


def fallback_overflow_dir(home: Path | None = None) -> Path:
    """Per-user, per-spool-home directory used when SPOOL_HOME itself cannot be written.

    Must match ``spool.hook.fallback_dir``.
    """
    import zlib

    tag = "%08x" % zlib.crc32(os.fsencode(str(home or spool_home())))
    from pathlib import Path

    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isdir(base):
        return Path(base) / f"spool-overflow-{tag}"
    import tempfile

    return Path(tempfile.gettempdir()) / f"spool-overflow-{os.getuid()}-{tag}"


def is_private_dir(path: Path) -> bool:
    """A real directory of this user that nobody else can write (see hook.private_dir)."""
    import stat

    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o022


def secure_file(path: Path) -> None:
    """Make a spool file owner-only (0600)."""
    try:
        os.chmod(path, 0o600)
    except OSError:
        pass
