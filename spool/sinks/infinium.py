"""The Infinium sink: ``POST {base_url}/agents/{agent_id}/trace`` over httpx.

Wire format (the existing connector's, plus an idempotency key):

* headers ``x-agent-id``, ``x-agent-key`` (the secret), ``Content-Type:
  application/json``, ``Idempotency-Key: <trace id>`` (the same on every attempt
  of a trace, so the receiver can drop a duplicate) and ``User-Agent:
  spool/<version> ...``;
* the body is ``spool.render.to_infinium(trace)`` with the project's preview
  limits.  A body over 1 MiB is shrunk (spool.sinks.size: previews trimmed,
  then middle steps dropped, then long strings cut) and says so in
  ``environment.custom_tags.spool_shrunk`` and a description suffix; it is never
  refused.

Per project (``spool.config.load(trace.project)``): agent id, base URL,
INFINIUM_TIMEOUT, INFINIUM_VERIFY_SSL.  One pooled ``httpx.Client`` per sink
instance (per verify setting), i.e. per dispatcher / worker run.

Outcomes (classified by spool.retry):

* no agent id, no secret, no keyring, or ``http://`` to a non-loopback host
  without ``allow_insecure_http``, or only INFINIUM_AGENT_SECRET for a base URL the
  user never approved for the project (spool.credentials) -> ``held`` with the
  reason, nothing sent;
* 401/403 -> held; later rows for the same agent id and URL are held without a
  request until ``reset()`` (credentials updated: ``release_held`` signals it);
* 3xx -> held: redirects are never followed (the secret would go to the new
  location); the user fixes ``base_url`` then runs ``spool retry``;
* a 2xx whose JSON says ``{"error": ...}`` or ``"success": false`` and carries
  no trace id is a failure the server reported: retried with backoff (bounded
  by the attempt limit), its message kept; a 2xx with a ``traceId``/``id`` or
  any other body is sent;
* the response id comes from ``traceId`` (or ``id``).

The secret is never logged or put into an outcome message (scrubbed even if a
server echoes it).
"""
from __future__ import annotations

import ipaddress
import json
import platform
import sys
from typing import Any, Mapping
from urllib.parse import quote, urlsplit

import httpx

from .. import __version__, config, credentials, render
from ..errors import SpoolError
from ..redact import redact
from ..retry import Outcome
from .base import Sink, TraceRow
from .size import MAX_BODY, shrink

MAX_MESSAGE = 500


def user_agent() -> str:
    return (f"spool/{__version__} (python {platform.python_version()}; "
            f"{sys.platform}) httpx/{httpx.__version__}")


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    h = host.strip("[]").lower()
    if h == "localhost" or h.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def url_problem(url: str) -> str | None:
    """Why ``url`` is not a usable http(s) URL (one line), or None.  httpx's own parser
    decides (an invalid host or port, e.g. ``https://999.999.1.1``, ``https://[::1``)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError when out of range
        if parts.scheme in ("http", "https") and host:
            httpx.URL(url)
    except (ValueError, httpx.InvalidURL) as exc:
        return f"{url!r} is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https") or not host:
        return f"{url!r} is not an http(s) URL"
    return None


def check_url(base_url: str, allow_insecure_http: bool) -> str | None:
    """Why the secret must not go to ``base_url``, or None when it may."""
    problem = url_problem(base_url)
    if problem:
        return (f"base_url {problem}; fix INFINIUM_BASE_URL or base_url in .spool/config.json "
                "(spool init --base-url), then `spool retry`")
    parts = urlsplit(base_url)
    if parts.scheme == "http" and not is_loopback(parts.hostname) and not allow_insecure_http:
        return (f"refusing to send the agent secret over plain http:// to {parts.hostname}; "
                "use https://, or set SPOOL_ALLOW_INSECURE_HTTP=true if you really mean it")
    return None


# --- body size ----------------------------------------------------------------

def mark_shrunk(body: dict, note: str) -> None:
    """Say in the body that spool shrank it (``custom_tags.spool_shrunk``, a
    description suffix)."""
    env = body.setdefault("environment", {})
    if isinstance(env, dict):
        tags = env.setdefault("custom_tags", {})
        if isinstance(tags, dict):
            tags["spool_shrunk"] = note
    desc = str(body.get("description", ""))
    suffix = " [shrunk by spool]"
    body["description"] = desc[: max(200 - len(suffix), 0)] + suffix


# --- responses ----------------------------------------------------------------

def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        return None


def _server_message(response: httpx.Response, data: Any) -> str:
    if isinstance(data, dict):
        for key in ("message", "error", "detail", "errors"):
            value = data.get(key)
            if isinstance(value, dict):
                value = value.get("message") or json.dumps(value)
            if value:
                return str(value)[:MAX_MESSAGE] if not isinstance(value, list) else \
                    json.dumps(value)[:MAX_MESSAGE]
    text = response.text.strip() if response.content else ""
    return text[:MAX_MESSAGE] or (response.reason_phrase or "")


def _response_id(data: Any) -> str | None:
    if isinstance(data, dict):
        for key in ("traceId", "id", "trace_id"):
            if data.get(key):
                return str(data[key])
        inner = data.get("data")
        if isinstance(inner, dict):
            return _response_id(inner)
    return None


class InfiniumSink(Sink):
    name = "infinium"

    def __init__(self, *, env: Mapping[str, str] | None = None,
                 transport: httpx.BaseTransport | None = None, max_body: int = MAX_BODY) -> None:
        self._env = env
        self._transport = transport
        self.max_body = max_body
        self._configs: dict[str | None, config.Config] = {}
        self._creds: dict[tuple[str, str, str], credentials.Credentials | SpoolError | None] = {}
        self._rejected: dict[tuple[str, str], str] = {}
        self._clients: dict[bool, httpx.Client] = {}

    # -- caches ----------------------------------------------------------
    def reset(self) -> None:
        self._configs.clear()
        self._creds.clear()
        self._rejected.clear()

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def config_for(self, row: TraceRow) -> config.Config:
        cfg = self._configs.get(row.project)
        if cfg is None:
            cfg = config.load(row.project, env=self._env)
            self._configs[row.project] = cfg
        return cfg

    def _credentials(self, cfg: config.Config) -> credentials.Credentials | None:
        # the project is part of the key: the env secret's consent is per project
        key = (cfg.agent_id or "", credentials.normalize_base_url(cfg.base_url),
               str(cfg.project))
        if key not in self._creds:
            try:
                self._creds[key] = credentials.resolve(cfg, env=self._env)
            except SpoolError as exc:
                self._creds[key] = exc
        found = self._creds[key]
        if isinstance(found, SpoolError):
            raise found
        return found

    def _client(self, verify: bool) -> httpx.Client:
        client = self._clients.get(verify)
        if client is None:
            client = httpx.Client(verify=verify, follow_redirects=False,
                                  transport=self._transport,
                                  headers={"User-Agent": user_agent()})
            self._clients[verify] = client
        return client

    # -- the interface ---------------------------------------------------
    def render(self, row: TraceRow) -> bytes:
        cfg = self.config_for(row)
        # Secrets in prompts / tool output never leave the machine: every text is redacted
        # before it is cut (render, shrink), and the whole body once more (tags, paths).
        body = render.to_infinium(row.body, max_input_preview=cfg.max_input_preview,
                                  max_output_preview=cfg.max_output_preview, redact=cfg.redact)
        if cfg.redact:
            body = redact(body)
        body, _note = shrink(body, self.max_body, mark=mark_shrunk, redact=cfg.redact)
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()

    def send(self, row: TraceRow, payload: bytes) -> Outcome:
        cfg = self.config_for(row)
        if not cfg.agent_id:
            return _held("NoAgentId", "no Infinium agent id is configured for "
                         f"{row.project or 'this trace'}; run `spool init --agent-id ...`")
        base_url = credentials.normalize_base_url(cfg.base_url)
        refusal = check_url(base_url, cfg.allow_insecure_http)
        if refusal:
            return _held("InvalidURL" if url_problem(base_url) else "InsecureURL", refusal)
        try:
            creds = self._credentials(cfg)
        except SpoolError as exc:
            return _held(getattr(exc, "error_class", "NoKeyring"), str(exc))
        if creds is None:
            return _held("NoCredentials",
                         f"no agent secret stored for agent {cfg.agent_id} at {base_url}; run "
                         "`spool update-credentials` or set INFINIUM_AGENT_SECRET")
        key = (creds.agent_id, base_url)
        if key in self._rejected:
            return _held("AuthRejected", self._rejected[key])
        url = f"{base_url}/agents/{quote(creds.agent_id, safe='')}/trace"
        headers = {
            "x-agent-id": creds.agent_id,
            "x-agent-key": creds.secret,
            "Content-Type": "application/json",
            "Idempotency-Key": row.trace_id,
        }
        try:
            response = self._client(cfg.verify_ssl).post(url, content=payload, headers=headers,
                                                         timeout=cfg.timeout)
        except httpx.TimeoutException as exc:
            return Outcome(error_class=type(exc).__name__,
                           message=_scrub(f"no answer within {cfg.timeout:g} s ({exc})", creds))
        except httpx.TransportError as exc:
            return Outcome(error_class=type(exc).__name__, message=_scrub(str(exc), creds))
        except (httpx.HTTPError, httpx.InvalidURL) as exc:  # a configuration problem
            return _held(type(exc).__name__, _scrub(f"cannot send to {url}: {exc}", creds))
        return self._outcome(response, creds)

    def _outcome(self, response: httpx.Response, creds: credentials.Credentials) -> Outcome:
        status = response.status_code
        data = _json(response)
        rid = _response_id(data)
        retry_after = response.headers.get("Retry-After")
        if 200 <= status < 300:
            if rid is None and isinstance(data, dict) and (
                    data.get("error") or data.get("success") is False):
                return Outcome(status=status, error_class="ServerReportedError", kind="retry",
                               message=_scrub(_server_message(response, data), creds),
                               retry_after=retry_after)
            return Outcome(status=status, response_id=rid)
        message = _scrub(_server_message(response, data), creds)
        if 300 <= status < 400:
            location = response.headers.get("Location", "?")
            return Outcome(status=status, error_class="Redirect",
                           message=f"the server redirects to {location}; spool does not follow "
                                   "redirects with the agent secret: fix base_url, then "
                                   "`spool retry`")
        if status in (401, 403):
            reason = (f"the server rejected the agent credentials (HTTP {status}: {message}); "
                      "run `spool update-credentials`")
            self._rejected[(creds.agent_id, creds.base_url)] = reason
            return Outcome(status=status, error_class="AuthRejected", message=reason)
        return Outcome(status=status, error_class=f"HTTP {status}", message=message,
                       response_id=rid, retry_after=retry_after)


def _held(error_class: str, message: str) -> Outcome:
    return Outcome(kind="held", error_class=error_class, message=message, attempted=False)


def _scrub(text: str, creds: credentials.Credentials) -> str:
    """The secret out of an error message, in every form a library may quote it."""
    if not creds.secret:
        return text
    for form in {creds.secret, repr(creds.secret)[1:-1], repr(creds.secret.encode())[2:-1]}:
        text = text.replace(form, "***")
    return text
