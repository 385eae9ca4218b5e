"""The Infinium agent secret: from the environment or the OS keyring, nowhere else.

* ``INFINIUM_AGENT_SECRET`` (environment) wins, as for the existing connector.
* Otherwise the OS keyring, service :data:`SERVICE` ("spool-infinium", not shared
  with sibling connectors), username ``f"{agent_id}@{base_url}"``: the secret is
  bound to the base URL it was stored for, so a ``.spool/config.json`` found in
  some parent directory that names another ``base_url`` finds no secret instead
  of sending it elsewhere.
* No keyring backend: a clear :class:`SpoolError` ("set INFINIUM_AGENT_SECRET
  instead"); there is never a plaintext fallback.

The secret is never logged, put in an exception message, argv or the database;
``Credentials.__repr__`` hides it.  Resolve once per worker run (the sink caches
it until ``reset()``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping

from .errors import SpoolError

SERVICE = "spool-infinium"
ENV_SECRET = "INFINIUM_AGENT_SECRET"
MIN_SECRET_LENGTH = 8


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


def _no_keyring() -> SpoolError:
    return SpoolError("no OS keyring is available on this machine to hold the agent secret.",
                      f"Set {ENV_SECRET} in the environment of the spool worker instead.")


def _keyring_error(action: str, exc: Exception) -> SpoolError:
    from keyring.errors import NoKeyringError

    if isinstance(exc, NoKeyringError):
        return _no_keyring()
    # The exception text comes from the backend; it never contains the secret we pass in
    # (backends report their own state), but keep only the class name to be sure.
    return SpoolError(f"the OS keyring failed to {action} ({type(exc).__name__}).",
                      f"Unlock the keyring, or set {ENV_SECRET} instead.")


def resolve(cfg, env: Mapping[str, str] | None = None) -> Credentials | None:
    """The credentials for ``cfg`` (a spool.config.Config), or None when there is no agent
    id or no secret stored for this agent id and base URL."""
    env = os.environ if env is None else env
    agent_id = getattr(cfg, "agent_id", None)
    if not agent_id:
        return None
    base_url = normalize_base_url(cfg.base_url)
    secret = env.get(ENV_SECRET)
    if secret:
        return Credentials(agent_id, base_url, secret, "env")
    kr = _keyring()
    from keyring.errors import KeyringError

    try:
        secret = kr.get_password(SERVICE, keyring_username(agent_id, base_url))
    except KeyringError as exc:
        raise _keyring_error("read the agent secret", exc) from None
    if not secret:
        return None
    return Credentials(agent_id, base_url, secret, "keyring")


def store(agent_id: str, base_url: str, secret: str) -> None:
    """Keep ``secret`` in the OS keyring for this agent id and base URL."""
    if not agent_id:
        raise SpoolError("no agent id given.", "Pass the Infinium agent id (a UUID).")
    if not secret or len(secret) < MIN_SECRET_LENGTH:
        raise SpoolError(f"the agent secret is shorter than {MIN_SECRET_LENGTH} characters.",
                         "Copy the whole secret from the Infinium dashboard.")
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
