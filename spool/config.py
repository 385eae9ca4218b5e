"""Project configuration: ``.spool/config.json`` found by walking up from a
directory (as git finds ``.git``), with environment variables on top.

The secret never lives here (environment or OS keyring only: spool.credentials).

Environment variables keep the meaning they have for the existing connector:

=================================  ==========================================
INFINIUM_AGENT_ID                  agent id (overrides the file)
INFINIUM_BASE_URL                  API base URL
INFINIUM_TIMEOUT                   request timeout, seconds (30)
INFINIUM_VERIFY_SSL                verify TLS certificates (true)
CONNECTOR_FLUSH_ON_STOP            per-turn traces on/off (granularity)
CONNECTOR_FLUSH_ON_SESSION_END     session summaries on/off (granularity)
CONNECTOR_SESSION_TTL              seconds of quiet before a session is stale (600)
CONNECTOR_MAX_INPUT_PREVIEW        preview length of inputs (200)
CONNECTOR_MAX_OUTPUT_PREVIEW       preview length of outputs (300)
SPOOL_GRANULARITY                  turn | session | both (overrides the file)
SPOOL_SESSION_END_GRACE            seconds to wait after SessionEnd (10)
SPOOL_SINKS                        comma list of sinks (infinium,file,...)
SPOOL_FILE_SINK_DIR                where the file sink writes (SPOOL_HOME/traces)
SPOOL_ALLOW_INSECURE_HTTP          allow the secret over http:// to a non-loopback host
SPOOL_REDACT                       redact secret-looking strings in traces (true)
=================================  ==========================================
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping

from .errors import SpoolError
from .files import write_atomic

CONFIG_DIR = ".spool"
CONFIG_FILE = "config.json"
DEFAULT_BASE_URL = "https://platform.i42m.ai/api/v1"
GRANULARITIES = ("turn", "session", "both")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _bool(value: str, name: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise SpoolError(f"{name}={value!r} is not a boolean.", f"Set {name} to true or false.")


def _num(value, name: str, kind=float, minimum: float = 0):
    try:
        n = kind(value)
    except (TypeError, ValueError):
        raise SpoolError(f"{name}={value!r} is not a number.", f"Set {name} to a number.") from None
    if n < minimum:
        raise SpoolError(f"{name}={value!r} is below {minimum}.", f"Set {name} to at least {minimum}.")
    return n


def env_number(env: Mapping[str, str], name: str, default, *, minimum: float = 0.0,
               kind=float, unit: str = ""):
    """A numeric environment variable, validated: unset/blank -> ``default``; not a
    (finite) number or below ``minimum`` -> a SpoolError naming the variable."""
    import math

    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    what = f"a number of {unit}" if unit else ("a whole number" if kind is int else "a number")
    try:
        value = kind(raw.strip())
    except ValueError:
        raise SpoolError(f"{name}={raw!r} is not {what}.",
                         f"Set {name} to {what}, or unset it.") from None
    if not math.isfinite(value) or value < minimum:
        raise SpoolError(f"{name}={raw!r} is out of range (minimum {minimum:g}).",
                         f"Set {name} to at least {minimum:g}{' ' + unit if unit else ''}, "
                         "or unset it.")
    return value


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    """A true/false environment variable: unset/blank -> ``default``; anything but
    1/true/yes/on or 0/false/no/off -> a SpoolError naming the variable."""
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    return _bool(raw, name)


@dataclass(frozen=True)
class Config:
    project: Path | None = None  # directory holding .spool/, or None
    source: str = "defaults"  # the config file used, or "defaults"
    agent_id: str | None = None
    base_url: str = DEFAULT_BASE_URL
    granularity: str = "turn"
    sinks: tuple[str, ...] = ()  # empty: infinium if an agent id is set, else file
    file_sink_dir: Path | None = None
    timeout: float = 30.0
    verify_ssl: bool = True
    session_ttl: float = 600.0
    session_end_grace: float = 10.0
    max_input_preview: int = 200
    max_output_preview: int = 300
    allow_insecure_http: bool = False
    redact: bool = True
    extra: Mapping[str, object] = field(default_factory=dict)

    @property
    def turn_traces(self) -> bool:
        return self.granularity in ("turn", "both")

    @property
    def session_traces(self) -> bool:
        return self.granularity in ("session", "both")

    def effective_sinks(self) -> tuple[str, ...]:
        if self.sinks:
            return self.sinks
        return ("infinium",) if self.agent_id else ("file",)


def find_project(start: Path | str | None) -> Path | None:
    """The nearest directory at or above ``start`` holding .spool/config.json."""
    if not start:
        return None
    p = Path(start).expanduser()
    try:
        p = p.resolve()
    except OSError:
        return None
    for d in (p, *p.parents):
        if (d / CONFIG_DIR / CONFIG_FILE).is_file():
            return d
    return None


def config_path(project: Path) -> Path:
    return project / CONFIG_DIR / CONFIG_FILE


def read_file(project: Path) -> dict:
    path = config_path(project)
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise SpoolError(f"cannot read {path}: {exc}.",
                         "Fix the file or run `spool init` again to rewrite it.") from None
    if not isinstance(data, dict):
        raise SpoolError(f"{path} is not a JSON object.", "Run `spool init` again to rewrite it.")
    return data


def write_file(project: Path, data: dict) -> Path:
    """Write .spool/config.json (0600, directory 0700) atomically."""
    if "agent_secret" in data or "secret" in data:
        raise ValueError("the secret never goes into the config file")
    d = project / CONFIG_DIR
    d.mkdir(mode=0o700, exist_ok=True)
    path = config_path(project)
    write_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return path


def check_base_url(value: str, where: str, *, usage: bool = False) -> str:
    """``value`` as a normalized http(s) URL with a host, or an error naming ``where``
    (a flag: UsageError, exit 2; an environment variable or a config key: SpoolError)."""
    import ipaddress
    from urllib.parse import urlsplit

    from .errors import UsageError

    url = str(value).strip().rstrip("/")
    why = ""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a bad port)
        host = parts.hostname or ""
    except ValueError as exc:
        why, host, parts = str(exc), "", None
    if not why:
        if parts.scheme not in ("http", "https"):
            why = "it must start with https:// (or http://)"
        elif not host:
            why = "it has no host"
        elif any(c.isspace() for c in url):
            why = "it contains spaces"
        elif host.replace(".", "").isdigit():
            try:
                ipaddress.ip_address(host)
            except ValueError:
                why = f"{host} is not an IP address"
    if not why:
        return url
    reason = f"{where} {value!r} is not a valid URL: {why}."
    if usage or where.startswith("--"):
        raise UsageError(reason, f"Pass e.g. {where} {DEFAULT_BASE_URL}")
    if where.isupper():
        raise SpoolError(reason, f"Fix or unset the environment variable {where}.")
    raise SpoolError(reason, "Fix it with `spool init --base-url URL`.")


def _from_mapping(cfg: Config, data: Mapping[str, object],
                  names: Mapping[str, str] | None = None) -> Config:
    """Apply ``data``; ``names`` says where each key came from (for error messages)."""
    names = names or {}
    known = {f for f in Config.__dataclass_fields__ if f not in ("project", "source", "extra")}
    updates: dict = {}
    for key, value in data.items():
        if key not in known or value is None:
            continue
        if key == "sinks":
            updates[key] = tuple(value) if isinstance(value, (list, tuple)) else tuple(
                s.strip() for s in str(value).split(",") if s.strip())
        elif key == "base_url":
            updates[key] = check_base_url(str(value), names.get(key, key))
        elif key == "file_sink_dir":
            updates[key] = Path(str(value)).expanduser()
        elif key in ("timeout", "session_ttl", "session_end_grace"):
            updates[key] = _num(value, names.get(key, key))
        elif key in ("max_input_preview", "max_output_preview"):
            updates[key] = _num(value, names.get(key, key), int)
        elif key in ("verify_ssl", "allow_insecure_http", "redact"):
            updates[key] = value if isinstance(value, bool) else _bool(str(value), names.get(key, key))
        else:
            updates[key] = str(value)
    out = replace(cfg, **updates)
    if out.granularity not in GRANULARITIES:
        name = names.get("granularity", "granularity")
        raise SpoolError(f"{name} {out.granularity!r} is not one of {', '.join(GRANULARITIES)}.",
                         f"Set {name} to turn, session or both, or unset it." if name.isupper()
                         else "Run `spool init --granularity turn|session|both`.")
    return out


ENV_NAMES = {
    "agent_id": "INFINIUM_AGENT_ID", "base_url": "INFINIUM_BASE_URL", "timeout": "INFINIUM_TIMEOUT",
    "verify_ssl": "INFINIUM_VERIFY_SSL", "session_ttl": "CONNECTOR_SESSION_TTL",
    "max_input_preview": "CONNECTOR_MAX_INPUT_PREVIEW",
    "max_output_preview": "CONNECTOR_MAX_OUTPUT_PREVIEW",
    "session_end_grace": "SPOOL_SESSION_END_GRACE", "sinks": "SPOOL_SINKS",
    "file_sink_dir": "SPOOL_FILE_SINK_DIR", "allow_insecure_http": "SPOOL_ALLOW_INSECURE_HTTP",
    "redact": "SPOOL_REDACT", "granularity": "SPOOL_GRANULARITY",
}


def _env_overrides(env: Mapping[str, str], base: Config) -> dict:
    """The settings the environment sets (ENV_NAMES; blank ones ignored), as raw strings:
    _from_mapping validates them.  SPOOL_GRANULARITY wins over CONNECTOR_FLUSH_*."""
    o = {key: env[name] for key, name in ENV_NAMES.items()
         if key != "granularity" and env.get(name)}
    # CONNECTOR_FLUSH_ON_STOP / _ON_SESSION_END map onto granularity.
    stop = env.get("CONNECTOR_FLUSH_ON_STOP")
    end = env.get("CONNECTOR_FLUSH_ON_SESSION_END")
    if stop is not None or end is not None:
        turn = _bool(stop, "CONNECTOR_FLUSH_ON_STOP") if stop else base.turn_traces
        sess = _bool(end, "CONNECTOR_FLUSH_ON_SESSION_END") if end else base.session_traces
        o["granularity"] = "both" if turn and sess else ("session" if sess else "turn")
    if env.get("SPOOL_GRANULARITY"):
        o["granularity"] = env["SPOOL_GRANULARITY"]
    return o


def load(start: Path | str | None = None, env: Mapping[str, str] | None = None) -> Config:
    """The configuration that applies at ``start`` (a cwd), env on top."""
    env = os.environ if env is None else env
    cfg = Config()
    project = find_project(start) if start is not None else None
    if project is not None:
        data = read_file(project)
        where = {k: f"{config_path(project)}: {k}" for k in data}
        cfg = replace(_from_mapping(cfg, data, where), project=project,
                      source=str(config_path(project)), extra=data)
    return _from_mapping(cfg, _env_overrides(env, cfg), ENV_NAMES)
