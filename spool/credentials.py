"""The Infinium agent secret: from the environment or the OS keyring, nowhere else.

* ``INFINIUM_AGENT_SECRET`` (environment) wins, as for the existing connector.
* Otherwise the OS keyring, service :data:`SERVICE` ("spool-infinium", not shared
  with sibling connectors), username ``f"{agent_id}@{base_url}"``: the secret is
  bound to the base URL it was stored for, so a ``.spool/config.json`` found in
  some parent directory that names another ``base_url`` finds no secret instead
  of sending it elsewhere.
* No keyring backend: a clear :class:`SpoolError` ("set INFINIUM_AGENT_SECRET
  instead"); there is never a plaintext fallback.
* The environment secret is not bound to a URL, so it is used only when the
  effective base URL is the default one, comes from ``INFINIUM_BASE_URL`` itself,
  or was approved by the user for that project (``spool init --base-url`` /
  ``spool update-credentials --base-url`` call :func:`approve_base_url`, which
  records ``kv['consent:base_url:<project>'] = <base URL>`` in the spool
  database).  Otherwise a ``.spool/config.json`` (in the project or any parent
  directory) naming another host cannot redirect the secret there:
  :func:`resolve` falls back to the keyring entry bound to that URL, and
  without one raises :class:`UnapprovedBaseURL` (a ``SpoolError``: the sink
  holds the rows with its message, nothing is sent).

The secret is never logged, put in an exception message, argv or the database;
``Credentials.__repr__`` hides it.  Resolve once per worker run (the sink caches
it until ``reset()``).
"""
from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from typing import Mapping

from .errors import SpoolError

SERVICE = "spool-infinium"
ENV_SECRET = "INFINIUM_AGENT_SECRET"
MIN_SECRET_LENGTH = 8
ENV_BASE_URL = "INFINIUM_BASE_URL"
CONSENT_PREFIX = "consent:base_url:"


class UnapprovedBaseURL(SpoolError):
    """The env secret would go to a base URL the user never approved for this project."""

    error_class = "UnapprovedBaseURL"


class InvalidSecret(SpoolError):
    """The secret cannot go into an HTTP header (control or non-ASCII characters)."""

    error_class = "InvalidSecret"


def check_secret(secret: str, where: str) -> None:
    """Refuse a secret an HTTP header cannot carry, without ever echoing it."""
    if not all(" " < ch < "\x7f" for ch in secret):
        raise InvalidSecret(
            f"the agent secret from {where} contains spaces, control or non-ASCII characters "
            "(a stray carriage return or newline?).",
            "Store it again without them: `spool update-credentials`, or fix "
            "INFINIUM_AGENT_SECRET.")


@dataclass(frozen=True)
class Credentials:
    agent_id: str
    base_url: str
    secret: str = field(repr=False)
    source: str = "keyring"  # env | keyring


def normalize_base_url(base_url: str) -> str:
    return base_url.strip().rstrip("/")


def keyring_username(agent_id: str, base_url: str) -> str:
    return f"{agent_id}@{normalize_base_url(base_url)}"


def _keyring():
    import keyring
    from keyring.backends import fail

    if isinstance(keyring.get_keyring(), fail.Keyring):
        raise _no_keyring()
    return keyring


def require_keyring() -> None:
    """A SpoolError (one line: use INFINIUM_AGENT_SECRET) when there is no OS keyring
    backend; ``spool init`` asks this before prompting for a secret or writing."""
    _keyring()


def _no_keyring() -> SpoolError:
    return SpoolError("no OS keyring is available on this machine to hold the agent secret.",
                      f"Set {ENV_SECRET} in the environment you run Codex in instead "
                      "(the worker the hooks start inherits it).")


def _keyring_error(action: str, exc: Exception) -> SpoolError:
    from keyring.errors import NoKeyringError

    if isinstance(exc, NoKeyringError):
        return _no_keyring()
    # The exception text comes from the backend; it never contains the secret we pass in
    # (backends report their own state), but keep only the class name to be sure.
    return SpoolError(f"the OS keyring failed to {action} ({type(exc).__name__}).",
                      f"Unlock the keyring, or set {ENV_SECRET} instead.")


def consent_key(project) -> str:
    """The kv key holding the base URL approved for ``project`` (its resolved path)."""
    from pathlib import Path

    try:
        p = Path(project).expanduser().resolve()
    except OSError:
        p = Path(project)
    return CONSENT_PREFIX + str(p)


def approve_base_url(engine_or_home, project, base_url: str) -> None:
    """Record that the user approved sending the env secret to ``base_url`` for traces of
    ``project`` (called by ``spool init --base-url`` / ``spool update-credentials
    --base-url``).  ``engine_or_home``: a SQLAlchemy engine, a spool home path, or None
    (the default home)."""
    from sqlalchemy import text

    from . import db

    engine, own = engine_or_home, False
    if engine is None or not hasattr(engine, "connect"):
        engine, own = db.open_db(engine_or_home), True
    try:
        with db.write(engine) as conn:
            conn.execute(text("INSERT INTO kv (key, value) VALUES (:k, :v) "
                              "ON CONFLICT(key) DO UPDATE SET value = excluded.value"),
                         {"k": consent_key(project), "v": normalize_base_url(base_url)})
    finally:
        if own:
            engine.dispose()


def approved_base_url(project, home=None) -> str | None:
    """The base URL approved for ``project``, or None (no database, no approval)."""
    from . import paths

    path = paths.db_path(home)
    if not path.exists():
        return None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return None
    try:
        row = conn.execute("SELECT value FROM kv WHERE key = ?", (consent_key(project),)).fetchone()
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    return row[0] if row and row[0] else None


def env_secret_refusal(cfg, env: Mapping[str, str] | None = None, home=None) -> str | None:
    """Why the env secret must not go to ``cfg.base_url`` (None: it may)."""
    from .config import DEFAULT_BASE_URL

    env = os.environ if env is None else env
    base_url = normalize_base_url(cfg.base_url)
    if base_url == normalize_base_url(DEFAULT_BASE_URL):
        return None
    from_env = env.get(ENV_BASE_URL)
    if from_env and normalize_base_url(from_env) == base_url:
        return None
    project = getattr(cfg, "project", None)
    if project is not None and approved_base_url(project, home) == base_url:
        return None
    where = getattr(cfg, "source", None) or "the project config"
    return (f"base URL {base_url} from {where} is not approved for the secret in {ENV_SECRET}; "
            f"run `spool update-credentials --base-url {base_url}` to approve")


def resolve(cfg, env: Mapping[str, str] | None = None, *, home=None) -> Credentials | None:
    """The credentials for ``cfg`` (a spool.config.Config), or None when there is no agent
    id or no secret stored for this agent id and base URL.  Raises
    :class:`UnapprovedBaseURL` when only the env secret exists and the base URL was not
    approved (see the module doc)."""
    env = os.environ if env is None else env
    agent_id = getattr(cfg, "agent_id", None)
    if not agent_id:
        return None
    base_url = normalize_base_url(cfg.base_url)
    secret = env.get(ENV_SECRET)
    refusal = None
    if secret:
        refusal = env_secret_refusal(cfg, env, home)
        if refusal is None:
            check_secret(secret, ENV_SECRET)
            return Credentials(agent_id, base_url, secret, "env")
    from keyring.errors import KeyringError

    try:
        kr = _keyring()
        secret = kr.get_password(SERVICE, keyring_username(agent_id, base_url))
    except SpoolError:
        if refusal:
            raise UnapprovedBaseURL(refusal) from None
        raise
    except KeyringError as exc:
        if refusal:
            raise UnapprovedBaseURL(refusal) from None
        raise _keyring_error("read the agent secret", exc) from None
    if not secret:
        if refusal:
            raise UnapprovedBaseURL(refusal)
        return None
    check_secret(secret, "the OS keyring")
    return Credentials(agent_id, base_url, secret, "keyring")


def store(agent_id: str, base_url: str, secret: str) -> None:
    """Keep ``secret`` in the OS keyring for this agent id and base URL."""
    if not agent_id:
        raise SpoolError("no agent id given.", "Pass the Infinium agent id (a UUID).")
    if not secret or len(secret) < MIN_SECRET_LENGTH:
        raise SpoolError(f"the agent secret is shorter than {MIN_SECRET_LENGTH} characters.",
                         "Copy the whole secret from the Infinium dashboard.")
    check_secret(secret, "the command line or prompt")
    kr = _keyring()
    from keyring.errors import KeyringError

    try:
        kr.set_password(SERVICE, keyring_username(agent_id, base_url), secret)
    except KeyringError as exc:
        raise _keyring_error("store the agent secret", exc) from None


def delete(agent_id: str, base_url: str) -> bool:
    """Remove the stored secret; False when there was none."""
    kr = _keyring()
    from keyring.errors import KeyringError, PasswordDeleteError

    try:
        kr.delete_password(SERVICE, keyring_username(agent_id, base_url))
    except PasswordDeleteError:
        return False
    except KeyringError as exc:
        raise _keyring_error("delete the agent secret", exc) from None
    return True
