"""The attribute tables of spool's OTLP spans, and the value conversions they use: pure.

Which names a span carries (spool/otlp.py builds the spans from these):

* the GenAI semantic conventions (``gen_ai.*``) on every span, the source of truth;
* the OpenInference names Arize Phoenix reads and does **not** derive from ``gen_ai.*``:
  ``llm.token_count.completion_details.reasoning``, ``llm.cost.total``, ``input.value`` /
  ``output.value`` on the root (and ``input.value`` on tools), ``openinference.span.kind`` on
  spans without a ``gen_ai.operation.name`` (CHAIN), ``session.id`` (the issue asks for it on
  every span), ``openinference.project.name`` on the resource;
* not the OpenInference copies Phoenix synthesizes itself from ``gen_ai.*`` (checked against
  Phoenix 20.26.1, ``phoenix/trace/gen_ai/conversion.py``; tests/test_e2e_otlp.py reads them
  back): the span kind from ``gen_ai.operation.name`` (chat -> LLM, execute_tool -> TOOL,
  invoke_agent -> AGENT), ``llm.provider``/``llm.system`` from ``gen_ai.provider.name``,
  ``llm.model_name`` from ``gen_ai.request.model``, ``llm.token_count.prompt``/``completion``/
  ``total``/``prompt_details.cache_read``/``cache_write`` from ``gen_ai.usage.*``,
  ``tool.name``/``tool.id``/``tool.parameters`` from ``gen_ai.tool.*`` and a tool's
  ``output.value`` from ``gen_ai.tool.call.result``.  A copy of each would cost ~22 of a
  turn's ~82 attributes (a quarter of the bytes and of the rendering time) for nothing.

Token counts: spool's ``input`` includes cached tokens (as OpenAI and ``gen_ai.usage.input_tokens``
count them); ``output`` includes reasoning.  Cost: each LLM span carries its request's
``llm.cost.total`` and ``spool.cost_usd``; the root only ``spool.cost_usd`` (the turn's) and
``spool.cost_flags``; an unpriced request has neither.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping  # (typing's are slower in isinstance)
from typing import Any

import orjson
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from .otlp_wire import MAX_INT, put
from .redact import scrub_tail

AGENT_NAME = "codex"
PROVIDER = "openai"
INPUT_SUMMARY_MAX = 3000
OUTPUT_SUMMARY_MAX = 8000
ERROR_MESSAGE_MAX = 1000
_MAX_S = MAX_INT / 1e9


# --- values ---------------------------------------------------------------------------

def ns(t: Any) -> int:
    """Epoch seconds as nanoseconds; anything not a usable time is 0 (then the trace's)."""
    if t.__class__ is float and 0 < t < _MAX_S:  # the usual case, first
        return int(round(t * 1e9))
    if not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t) or t <= 0:
        return 0
    return int(round(float(t) * 1e9)) if t < _MAX_S else MAX_INT


def count(v: Any) -> int:
    """A count: finite numbers (not booleans) as int64, anything else 0."""
    if v.__class__ is int and -MAX_INT <= v <= MAX_INT:  # the usual case, first
        return v
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return 0
    if isinstance(v, float) and not math.isfinite(v):
        return 0
    return max(min(int(v), MAX_INT), -MAX_INT)


def cost(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def as_text(v: Any) -> str:
    """Any body value as text (JSON for what is not a string)."""
    if v.__class__ is str:
        return v
    return "" if v is None else json.dumps(v, ensure_ascii=False, default=str)


def clip(text: str, limit: int, redacted: bool = False) -> str:
    """``text`` cut to ``limit``; when it is ``redacted`` text, the cut never leaves the
    start of a secret (spool.redact.scrub_tail)."""
    if len(text) <= limit:
        return text
    if limit <= 0:
        return ""
    if limit <= 3:
        return scrub_tail(text[:limit]) if redacted else text[:limit]
    kept = text[: limit - 3]
    return (scrub_tail(kept) if redacted else kept) + "..."


def messages(role: str, text: str, finish_reason: str | None = None) -> str:
    """``gen_ai.input.messages`` / ``gen_ai.output.messages``: one text message."""
    msg: dict[str, Any] = {"role": role, "parts": [{"type": "text", "content": text}]}
    if finish_reason:
        msg["finish_reason"] = finish_reason
    try:
        return orjson.dumps([msg]).decode()
    except TypeError:  # text orjson refuses (a lone surrogate): the stdlib's escapes
        return json.dumps([msg], separators=(",", ":"))


# --- tables ---------------------------------------------------------------------------

def usage(u: Mapping[str, Any], *, reasoning_oi: bool) -> list[tuple[str, Any]]:
    """Token counts (GenAI names; ``reasoning_oi``: also the reasoning count under the
    OpenInference name, which Phoenix does not derive — LLM spans only, so a backend that
    sums ``llm.token_count.*`` over a trace does not count the root's totals twice)."""
    get = u.get
    reasoning = count(get("reasoning"))
    pairs: list[tuple[str, Any]] = [
        ("gen_ai.usage.input_tokens", count(get("input"))),
        ("gen_ai.usage.output_tokens", count(get("output"))),
        ("gen_ai.usage.cache_read.input_tokens", count(get("cached"))),
        ("gen_ai.usage.reasoning.output_tokens", reasoning)]
    write = count(get("cache_write"))
    if write:
        pairs += [("gen_ai.usage.cache_write.input_tokens", write),
                  ("gen_ai.usage.cache_creation.input_tokens", write)]
    if reasoning_oi:
        pairs.append(("llm.token_count.completion_details.reasoning", reasoning))
    return pairs


def failed(step: Mapping[str, Any]) -> bool:
    err = step.get("error")
    if err is not None and isinstance(err, Mapping):
        return True
    code = step.get("exit_code")
    return (isinstance(code, int) and code != 0) or step.get("status") in ("failed", "declined")


def template(pairs: list[tuple[str, Any]]) -> Span:
    """A span holding constant attributes, merged into each span of its kind (one C copy
    instead of one Python call per attribute)."""
    sp = Span()
    put(sp.attributes, pairs)
    return sp


CHAT = template([("gen_ai.operation.name", "chat"), ("gen_ai.provider.name", PROVIDER)])
TOOL = template([("gen_ai.operation.name", "execute_tool"), ("gen_ai.provider.name", PROVIDER),
                 ("gen_ai.tool.type", "function")])
AGENT = template([("gen_ai.operation.name", "invoke_agent"), ("gen_ai.provider.name", PROVIDER)])
CHAIN = template([("openinference.span.kind", "CHAIN")])


class Templates:
    """Templates made once per export request: the attributes a span shares with other spans
    of its kind, keyed by their values — the session id on every span; the session's
    environment, model and usual flags on the root; the model and the status on a chat span;
    the tool's name, status and exit code on a tool span.  Few distinct values, so one
    C-level copy replaces several Python-level attribute writes.  A template is kept
    serialized: a span merges it with ``MergeFromString`` (upb's ``MergeFrom`` serializes its
    argument first, every time)."""

    def __init__(self) -> None:
        self._made: dict[tuple, bytes] = {}

    def get(self, base: Span, pairs: tuple[tuple[str, Any], ...]) -> bytes:
        """A serialized span with ``base``'s attributes, then ``pairs``."""
        try:  # the types are part of the key: 1, 1.0 and True are equal keys
            key: tuple | None = (id(base), pairs, tuple([v.__class__ for _, v in pairs]))
            t = self._made.get(key)  # type: ignore[arg-type]
        except TypeError:  # a value that is not hashable (a malformed body): not shared
            key = t = None
        if t is None:
            sp = Span()
            sp.MergeFrom(base)
            put(sp.attributes, pairs)
            t = sp.SerializeToString(deterministic=True)
            if key is not None:
                self._made[key] = t
        return t
