"""The OTLP sink: traces as OpenTelemetry spans, ``POST``ed to any OTLP/HTTP receiver.

Configuration follows the OpenTelemetry exporter conventions (environment first, then the
project's ``.spool/config.json`` ``"otlp"`` object for the non-secret settings):

======================================================  ==========================================
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``                  the full URL (used as is)
``OTEL_EXPORTER_OTLP_ENDPOINT``                         a base URL; ``/v1/traces`` is appended
  (config: ``"otlp": {"endpoint": ...}``)               default ``http://localhost:4318``
``OTEL_EXPORTER_OTLP_(TRACES_)HEADERS``                 ``k=v,k2=v2``, URL-decoded; **secrets**:
                                                        environment only, never logged, never in
                                                        an error message or the database
``OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL``                ``http/protobuf`` (default) | ``http/json``
  (config: ``"protocol"``)
``OTEL_EXPORTER_OTLP_(TRACES_)COMPRESSION``             ``gzip`` | ``none`` (default)
  (config: ``"compression"``)
``OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT``                 milliseconds (default 10000)
  (config: ``"timeout_ms"``)
``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``     the resource (spool.otlp.Options)
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``  content on spans (default on; see
                                                        spool.otlp.capture_content)
======================================================  ==========================================

Outcomes (OTLP/HTTP retry rules):

* 2xx -> sent; a ``partial_success`` in the answer (spans rejected) is recorded as
  ``PartialSuccess`` with the count and message (``spool errors`` shows it), never retried;
* 429/502/503/504 and no response (refused, reset, timeout) -> retried, ``Retry-After`` honoured;
* 415 (the receiver does not take this encoding), an endpoint that is not an http(s) URL,
  ``grpc`` as protocol, or headers (secrets) over plain http to a non-loopback host without
  ``SPOOL_ALLOW_INSECURE_HTTP`` -> held with a one-line reason (fix, then ``spool retry``);
* 401/403 and 3xx -> held (spool.retry); any other status -> dead at once (not retried).

Session summaries: when the project also makes turn traces (granularity ``turn``/``both``) a
``kind=session`` row is acknowledged without a request (the turns' spans already carry
everything, and a second copy would duplicate them in the backend); with granularity
``session`` the summary is the only trace and is exported like a turn.

Batching: :meth:`OtlpSink.render_batch` / :meth:`OtlpSink.send_batch` put many rows into one
export request (one ``ResourceSpans`` per distinct resource); the dispatcher uses them when a
sink has them (spool.deliver), bounded by :data:`MAX_BATCH_ROWS` and :data:`MAX_BATCH_BYTES`.
"""
from __future__ import annotations

import functools
import gzip
import math
import ssl
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence
from urllib.parse import unquote, urlsplit

import httpx

from .. import config, otlp, otlp_wire
from ..retry import Outcome
from .base import Sink, TraceRow
from .infinium import is_loopback, url_problem, user_agent

DEFAULT_ENDPOINT = "http://localhost:4318"
DEFAULT_TIMEOUT_MS = 10_000.0
PROTOCOLS = ("http/protobuf", "http/json")
CONTENT_TYPES = {"http/protobuf": "application/x-protobuf", "http/json": "application/json"}
RETRYABLE = frozenset({429, 502, 503, 504})
MAX_BATCH_ROWS = 500
MAX_BATCH_BYTES = 4 * 1024 * 1024
MAX_MESSAGE = 300


@dataclass(frozen=True)
class OtlpConfig:
    endpoint: str
    protocol: str = "http/protobuf"
    compression: str | None = None
    timeout: float = DEFAULT_TIMEOUT_MS / 1000.0
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # secrets
    options: otlp.Options = otlp.Options()
    turn_traces: bool = True
    allow_insecure_http: bool = False
    problem: str | None = None  # why nothing can be sent (a held row's reason)

    @property
    def secrets(self) -> list[str]:
        """Header values and their words ("Basic <token>": the token alone too), longest
        first, to scrub from any text spool keeps."""
        out = {v for _, v in self.headers if v}
        out |= {w for _, v in self.headers for w in v.split() if len(w) >= 8}
        return sorted(out, key=len, reverse=True)


_FALSE = {"0", "false", "no", "off", "no_content", "event_only"}


def capture_content(env: Mapping[str, str]) -> bool:
    """``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``: spool's default is **on**, as its
    other sinks send previews (redacted, cut to the preview limits); ``false`` (or
    ``NO_CONTENT``/``EVENT_ONLY``) keeps prompts, answers, commands and tool output out of spans.
    An unknown value counts as on (it was set to something: the user wants content)."""
    raw = (env.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT") or "").strip().lower()
    return raw not in _FALSE


def parse_pairs(raw: str | None) -> list[tuple[str, str]]:
    """``k=v,k2=v2`` (the OTel env format: keys and values URL-decoded, blanks trimmed).
    Entries without ``=`` or with an empty key are skipped."""
    out: list[tuple[str, str]] = []
    for part in (raw or "").split(","):
        key, sep, value = part.partition("=")
        key = unquote(key.strip())
        if sep and key:
            out.append((key, unquote(value.strip())))
    return out


def options_from_env(env: Mapping[str, str], *, max_input_preview: int = 200,
                     max_output_preview: int = 300, redact: bool = True) -> otlp.Options:
    """The mapping's options: OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, the content switch."""
    attrs = parse_pairs(env.get("OTEL_RESOURCE_ATTRIBUTES"))
    service = (env.get("OTEL_SERVICE_NAME") or "").strip() or dict(attrs).get(
        "service.name") or otlp.DEFAULT_SERVICE_NAME
    return otlp.Options(service_name=service,
                        resource_attributes=tuple((k, v) for k, v in attrs
                                                  if k != "service.name"),
                        capture_content=capture_content(env),
                        max_input_preview=max_input_preview,
                        max_output_preview=max_output_preview, redact=redact)


def _pick(env: Mapping[str, str], *names: str) -> str | None:
    for n in names:
        v = env.get(n)
        if v is not None and v.strip():
            return v.strip()
    return None


def load_config(cfg: config.Config, env: Mapping[str, str]) -> OtlpConfig:
    """The OTLP settings for one project (``cfg``) with the environment on top.  Pure."""
    file = cfg.extra.get("otlp") if isinstance(cfg.extra.get("otlp"), Mapping) else {}
    problems: list[str] = []
    endpoint = _pick(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if endpoint is None:
        base = _pick(env, "OTEL_EXPORTER_OTLP_ENDPOINT") or str(
            file.get("endpoint") or DEFAULT_ENDPOINT)
        endpoint = base.rstrip("/") + "/v1/traces"
    bad = url_problem(endpoint)
    parts = urlsplit(endpoint) if bad is None else urlsplit("http://invalid")
    if bad:
        problems.append(f"the OTLP endpoint {bad}; set "
                        "OTEL_EXPORTER_OTLP_ENDPOINT (e.g. http://localhost:4318), then "
                        "`spool retry`")
    protocol = (_pick(env, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
                or str(file.get("protocol") or "http/protobuf")).lower()
    if protocol not in PROTOCOLS:
        problems.append(f"OTLP protocol {protocol!r} is not supported by spool; set "
                        "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf (or http/json)")
    compression = (_pick(env, "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
                         "OTEL_EXPORTER_OTLP_COMPRESSION") or str(file.get("compression") or "none")
                   ).lower()
    if compression not in ("gzip", "none"):
        problems.append(f"OTLP compression {compression!r} is not supported; use gzip or none")
    raw_timeout = _pick(env, "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT") \
        or file.get("timeout_ms")
    timeout_ms = DEFAULT_TIMEOUT_MS
    if raw_timeout is not None:
        try:
            timeout_ms = float(raw_timeout)
            if not math.isfinite(timeout_ms) or timeout_ms <= 0:
                raise ValueError
        except (TypeError, ValueError):
            problems.append(f"OTEL_EXPORTER_OTLP_TIMEOUT={raw_timeout!r} is not a positive "
                            "number of milliseconds")
            timeout_ms = DEFAULT_TIMEOUT_MS
    headers = dict(parse_pairs(env.get("OTEL_EXPORTER_OTLP_HEADERS")))
    headers.update(parse_pairs(env.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS")))
    if headers and parts.scheme == "http" and not is_loopback(parts.hostname) \
            and not cfg.allow_insecure_http and not problems:
        problems.append(f"refusing to send OTLP headers over plain http:// to {parts.hostname}; "
                        "use https://, or set SPOOL_ALLOW_INSECURE_HTTP=true if you mean it")
    opts = options_from_env(env, max_input_preview=cfg.max_input_preview,
                                 max_output_preview=cfg.max_output_preview, redact=cfg.redact)
    return OtlpConfig(endpoint=endpoint, protocol=protocol,
                      compression=None if compression == "none" else compression,
                      timeout=timeout_ms / 1000.0, headers=tuple(headers.items()), options=opts,
                      turn_traces=cfg.turn_traces, allow_insecure_http=cfg.allow_insecure_http,
                      problem=problems[0] if problems else None)


class OtlpSink(Sink):
    name = "otlp"
    max_batch_rows = MAX_BATCH_ROWS  # the dispatcher's bounds of one export request
    max_batch_bytes = MAX_BATCH_BYTES

    def __init__(self, *, env: Mapping[str, str] | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        import os

        self._env = os.environ if env is None else env
        self._transport = transport
        self._configs: dict[str | None, OtlpConfig] = {}
        self._client: httpx.Client | None = None

    def reset(self) -> None:
        self._configs.clear()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def config_for(self, row: TraceRow) -> OtlpConfig:
        c = self._configs.get(row.project)
        if c is None:
            c = load_config(config.load(row.project, env=self._env), self._env)
            self._configs[row.project] = c
        return c

    def skipped(self, row: TraceRow) -> bool:
        """A session summary whose turns are exported as their own traces."""
        return row.kind == "session" and self.config_for(row).turn_traces

    # -- one row ---------------------------------------------------------
    def render(self, row: TraceRow) -> bytes:
        return self.render_batch([row])

    def send(self, row: TraceRow, payload: bytes) -> Outcome:
        return self.send_batch([row], payload)

    # -- many rows ---------------------------------------------------------
    def render_batch(self, rows: Sequence[TraceRow]) -> bytes:
        """One export request for ``rows`` (skipped session summaries left out; b"" if none)."""
        live = [r for r in rows if not self.skipped(r)]
        if not live:
            return b""
        groups: dict[otlp.Options, list[Mapping[str, Any]]] = {}
        for r in live:
            groups.setdefault(self.config_for(r).options, []).append(r.body)
        req = otlp.export_request(list(groups.items()))
        return otlp_wire.encode(req, self.config_for(live[0]).protocol)

    def send_batch(self, rows: Sequence[TraceRow], payload: bytes) -> Outcome:
        """Send one request made by :meth:`render_batch` for ``rows`` (one shared outcome).
        The rows must share an endpoint config (the dispatcher groups by :meth:`batch_key`)."""
        if not payload:
            return Outcome(kind="sent", attempted=False, error_class="Skipped",
                           message="session summary: its turns are exported as their own traces")
        live = [r for r in rows if not self.skipped(r)]
        c = self.config_for(live[0])
        if c.problem:
            return Outcome(kind="held", error_class="OtlpConfig", message=c.problem,
                           attempted=False)
        headers = {**dict(c.headers), "Content-Type": CONTENT_TYPES[c.protocol]}
        body = payload
        if c.compression == "gzip":
            body = gzip.compress(payload, compresslevel=6, mtime=0)
            headers["Content-Encoding"] = "gzip"
        try:
            response = self._http().post(c.endpoint, content=body, headers=headers,
                                         timeout=c.timeout)
        except httpx.TimeoutException as exc:
            return Outcome(error_class=type(exc).__name__,
                           message=_scrub(f"no answer within {c.timeout:g} s", c))
        except httpx.TransportError as exc:
            return Outcome(error_class=type(exc).__name__, message=_scrub(str(exc), c))
        except (httpx.HTTPError, httpx.InvalidURL) as exc:  # a configuration problem
            return Outcome(kind="held", error_class=type(exc).__name__, attempted=False,
                           message=_scrub(f"cannot send to {c.endpoint}: {exc}", c))
        return _outcome(response, c)

    def batch_key(self, row: TraceRow) -> tuple:
        """Rows with the same key may share one request."""
        c = self.config_for(row)
        return (c.endpoint, c.protocol, c.compression, c.timeout, c.headers)

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(follow_redirects=False, transport=self._transport,
                                        headers={"User-Agent": user_agent()}, verify=_tls())
        return self._client


@functools.lru_cache(maxsize=1)
def _tls() -> ssl.SSLContext:
    """httpx's verifying TLS context (the CAs of SSL_CERT_FILE/DIR or certifi), made once per
    process: loading the CA store costs 30-50 ms, which every new dispatcher (a worker run,
    `spool test`, `spool doctor --online`) paid before its first export."""
    return httpx.create_ssl_context()


def _outcome(response: httpx.Response, c: OtlpConfig) -> Outcome:
    status = response.status_code
    retry_after = response.headers.get("Retry-After")
    if 200 <= status < 300:
        partial = otlp_wire.partial_success(response.content, response.headers.get("Content-Type"))
        if partial:
            n, msg = partial
            return Outcome(status=status, kind="sent", error_class="PartialSuccess",
                           message=_scrub(f"the receiver rejected {n} span(s): {msg}"[
                               :MAX_MESSAGE], c))
        return Outcome(status=status)
    message = _scrub(_text(response), c)
    if status == 415:
        other = "http/json" if c.protocol == "http/protobuf" else "http/protobuf"
        return Outcome(status=status, kind="held", error_class="HTTP 415",
                       message=f"{c.endpoint} does not accept {CONTENT_TYPES[c.protocol]} "
                               f"(HTTP 415); set OTEL_EXPORTER_OTLP_PROTOCOL={other}, then "
                               "`spool retry`")
    if status in RETRYABLE:
        return Outcome(status=status, kind="retry", error_class=f"HTTP {status}",
                       message=message, retry_after=retry_after)
    if status in (401, 403):
        return Outcome(status=status, kind="held", error_class="AuthRejected",
                       message=f"the receiver refused the request (HTTP {status}: {message}); "
                               "check OTEL_EXPORTER_OTLP_HEADERS, then `spool retry`")
    if 300 <= status < 400:
        return Outcome(status=status, kind="held", error_class="Redirect",
                       message=f"{c.endpoint} redirects to {response.headers.get('Location', '?')};"
                               " spool does not follow redirects: fix the endpoint, then "
                               "`spool retry`")
    return Outcome(status=status, kind="dead", error_class=f"HTTP {status}", message=message)


def _text(response: httpx.Response) -> str:
    """A printable excerpt of an error body (OTLP errors are often a protobuf Status)."""
    raw = response.content[:2000].decode("utf-8", "replace")
    text = "".join(ch if ch.isprintable() else " " for ch in raw)
    return " ".join(text.split())[:MAX_MESSAGE] or response.reason_phrase or ""


def _scrub(text: str, c: OtlpConfig) -> str:
    for secret in c.secrets:
        if len(secret) >= 3:
            text = text.replace(secret, "***")
    return text


# --- `spool doctor` ----------------------------------------------------------------------

def doctor(cfg: config.Config, env: Mapping[str, str], online: bool = False,
           transport: httpx.BaseTransport | None = None) -> list[tuple[str, str, str]]:
    """(status ok|fail, detail, fix) lines about the OTLP configuration: the endpoint,
    protocol, compression, the header *names* (never values); with ``online`` an empty export
    request (valid OTLP, no spans) is sent and its status reported."""
    c = load_config(cfg, env)
    if c.problem:
        return [("fail", c.problem, "Fix the OTEL_EXPORTER_OTLP_* setting, then `spool retry`.")]
    names = ", ".join(k for k, _ in c.headers) or "none"
    out = [("ok", f"{c.endpoint} ({c.protocol}, compression {c.compression or 'none'}, "
                  f"timeout {c.timeout:g} s, headers: {names}, content "
                  f"{'on' if c.options.capture_content else 'off'})", "")]
    if online:
        sink = OtlpSink(env=env, transport=transport)
        sink._configs[None] = c
        row = TraceRow(trace_id="doctor", kind="test", project=None, name="doctor", body={})
        empty = otlp_wire.encode(otlp.export_request([(c.options, [])]), c.protocol)  # no spans
        try:
            outcome = sink.send_batch([row], empty)
        finally:
            sink.close()
        ok = outcome.status is not None and 200 <= outcome.status < 300
        detail = (f"{c.endpoint} answered HTTP {outcome.status}" if outcome.status is not None
                  else f"{c.endpoint}: {outcome.error_class} {outcome.message or ''}".strip())
        if outcome.message and outcome.status is not None and not ok:
            detail += f" - {outcome.message}"
        out.append(("ok" if ok else "fail", detail,
                    "" if ok else "Check the endpoint, OTEL_EXPORTER_OTLP_HEADERS and "
                                  "OTEL_EXPORTER_OTLP_PROTOCOL."))
    return out
