"""The retry policy: what an outcome means, and when to try again.

Pure functions, no I/O: the dispatcher (spool/deliver.py) passes the outcome
of one attempt, the row's counters, ``now`` and a random source, and gets back
a :class:`Decision` (the next state and, for a retry, when).

Classification of one attempt (:func:`classify`):

==========================================  =========================================
2xx                                         ``sent``
connection error / timeout (no response)    ``retry``
408 409 425 429 500 502 503 504             ``retry`` (:data:`RETRYABLE_STATUSES`)
401 403                                     ``held``: a credentials problem; the row
                                            waits, without burning attempts, until
                                            ``spool update-credentials`` releases it
3xx                                         ``held``: the base URL redirects; spool
                                            never follows a redirect with the secret
                                            and a retry would get the same answer, so
                                            the row waits until the URL is fixed and
                                            ``spool retry`` releases it
any other status (400 404 413 422 501 ...)  ``dead`` at once, with the server's message
==========================================  =========================================

A sink may force a classification (``Outcome.kind``): e.g. the Infinium sink
says ``held`` when there are no credentials or the URL is insecure, and
``retry`` for a 200 whose JSON body reports an error.

Retry timing: full-jitter exponential backoff,
``delay = rand() * min(cap, base * 2 ** (attempts - 1))``; a ``Retry-After``
header (seconds or an HTTP date) replaces the computed delay.  A row gives up
(``dead``) when a retryable failure happens after ``max_attempts`` attempts
that reached the server (an HTTP status), or ``max_age`` seconds after its
first attempt.  Failures with no response at all (offline laptop, DNS, refused
connection, timeout) count only against ``max_age``: a machine offline for a
night must not lose its traces.

Configuration (environment, validated; :meth:`RetryConfig.from_env`):

=====================  =======  ==============================================
SPOOL_RETRY_BASE       1        first backoff step, seconds
SPOOL_RETRY_CAP        300      largest backoff step, seconds
SPOOL_MAX_ATTEMPTS     20       attempts that got an HTTP answer before giving up
SPOOL_MAX_AGE          604800   seconds after the first attempt before giving up
SPOOL_LEASE_SECONDS    timeout  how long a claimed row stays owned by one worker
                       + 15     (INFINIUM_TIMEOUT 30 -> 45 s); a worker that dies
                                leaves rows that become due again after this
=====================  =======  ==============================================
"""
from __future__ import annotations

import math
import os
import random as _random
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Callable, Mapping

from .errors import SpoolError
from .outbox import OutboxState

RETRYABLE_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
AUTH_STATUSES = frozenset({401, 403})
OUTCOME_KINDS = ("sent", "retry", "dead", "held")

DEFAULT_BASE = 1.0
DEFAULT_CAP = 300.0
DEFAULT_MAX_ATTEMPTS = 20
DEFAULT_MAX_AGE = 7 * 24 * 3600.0
LEASE_MARGIN = 15.0
DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True)
class Outcome:
    """What one attempt of one sink produced (transport independent)."""

    status: int | None = None  # HTTP status, None when there was no response
    error_class: str | None = None  # e.g. "ConnectError", "ReadTimeout", "HTTP 500"
    message: str | None = None  # the server's message or the error text
    response_id: str | None = None  # the receiver's id of the trace
    retry_after: str | float | None = None  # raw Retry-After (seconds or HTTP date)
    kind: str | None = None  # force a classification: sent|retry|dead|held
    attempted: bool = True  # False: nothing left this machine (no attempt burned)

    def __post_init__(self) -> None:
        if self.kind is not None and self.kind not in OUTCOME_KINDS:
            raise ValueError(f"unknown outcome kind {self.kind!r}")


@dataclass(frozen=True)
class Decision:
    state: OutboxState  # sent | failed | dead | held
    outcome: str  # sent | retry | dead | held (as recorded in delivery_attempts)
    next_attempt_at: float | None = None  # for state 'failed'
    reason: str | None = None  # for failed/dead/held: why


@dataclass(frozen=True)
class RetryConfig:
    base: float = DEFAULT_BASE
    cap: float = DEFAULT_CAP
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    max_age: float = DEFAULT_MAX_AGE
    lease_seconds: float = DEFAULT_TIMEOUT + LEASE_MARGIN

    def __post_init__(self) -> None:
        _check("SPOOL_RETRY_BASE", self.base, 0.001)
        _check("SPOOL_RETRY_CAP", self.cap, self.base)
        _check("SPOOL_MAX_ATTEMPTS", self.max_attempts, 1)
        _check("SPOOL_MAX_AGE", self.max_age, 1)
        _check("SPOOL_LEASE_SECONDS", self.lease_seconds, 1)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "RetryConfig":
        env = os.environ if env is None else env
        timeout = _parse(env, "INFINIUM_TIMEOUT", float, DEFAULT_TIMEOUT)
        return cls(
            base=_parse(env, "SPOOL_RETRY_BASE", float, DEFAULT_BASE),
            cap=_parse(env, "SPOOL_RETRY_CAP", float, DEFAULT_CAP),
            max_attempts=_parse(env, "SPOOL_MAX_ATTEMPTS", int, DEFAULT_MAX_ATTEMPTS),
            max_age=_parse(env, "SPOOL_MAX_AGE", float, DEFAULT_MAX_AGE),
            lease_seconds=_parse(env, "SPOOL_LEASE_SECONDS", float, timeout + LEASE_MARGIN),
        )


def _parse(env: Mapping[str, str], name: str, kind, default):
    from .config import env_number

    return env_number(env, name, default, kind=kind, minimum=-math.inf)


def _check(name: str, value: float, minimum: float) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < minimum:
        raise SpoolError(f"{name}={value!r} is too small (minimum {minimum:g}).",
                         f"Set {name} to at least {minimum:g}, or unset it for the default.")


def parse_retry_after(value: str | float | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After value (delta seconds or HTTP date); None if absent
    or unparseable.  Never negative."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return max(0.0, float(value)) if math.isfinite(value) else None
    s = str(value).strip()
    if not s:
        return None
    try:
        secs = float(s)
    except ValueError:
        pass
    else:
        return max(0.0, secs) if math.isfinite(secs) else None
    try:
        when = parsedate_to_datetime(s)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # an HTTP date is always GMT
        from datetime import timezone

        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - now)


def classify(outcome: Outcome) -> str:
    """sent | retry | dead | held for one attempt (see the module doc)."""
    if outcome.kind is not None:
        return outcome.kind
    status = outcome.status
    if status is None:
        return "retry" if outcome.error_class else "dead"
    if 200 <= status < 300:
        return "sent"
    if status in AUTH_STATUSES:
        return "held"
    if status in RETRYABLE_STATUSES:
        return "retry"
    if 300 <= status < 400:
        return "held"
    if status < 200:
        return "retry"
    return "dead"


def backoff(attempts: int, cfg: RetryConfig, rand: Callable[[], float]) -> float:
    """Full-jitter delay after the ``attempts``-th failure (1-based)."""
    exp = min(max(attempts, 1) - 1, 60)  # 2**60 * base is far past any cap
    ceiling = min(cfg.cap, cfg.base * (2.0 ** exp))
    return ceiling * min(max(rand(), 0.0), 1.0)


def describe(outcome: Outcome) -> str:
    parts = []
    if outcome.status is not None:
        parts.append(f"HTTP {outcome.status}")
    elif outcome.error_class:
        parts.append(outcome.error_class)
    if outcome.message:
        parts.append(outcome.message)
    return ": ".join(parts) or "unknown error"


def decide(outcome: Outcome, *, attempts: int, first_attempt_at: float | None, now: float,
           cfg: RetryConfig, rand: Callable[[], float] | None = None,
           http_attempts: int | None = None) -> Decision:
    """The row's next state after ``outcome``.

    ``attempts``: attempts counted for this row including this one; ``http_attempts``: of
    the retryable failures since the first attempt, those that got an HTTP answer or that a
    sink classified itself (i.e. not a bare "no response"), this one included; compared with
    ``max_attempts`` (defaults to ``attempts``); ``first_attempt_at``: when the first attempt
    started (age limit).
    """
    rand = rand or _random.random
    kind = classify(outcome)
    reason = describe(outcome)
    if kind == "sent":
        return Decision(OutboxState.SENT, "sent")
    if kind == "dead":
        return Decision(OutboxState.DEAD, "dead", reason=reason)
    if kind == "held":
        return Decision(OutboxState.HELD, "held", reason=reason)
    counted = attempts if http_attempts is None else http_attempts
    if (outcome.status is not None or outcome.kind == "retry") and counted >= cfg.max_attempts:
        return Decision(OutboxState.DEAD, "dead",
                        reason=f"gave up after {attempts} attempts: {reason}")
    start = now if first_attempt_at is None else first_attempt_at
    if now - start >= cfg.max_age:
        return Decision(OutboxState.DEAD, "dead",
                        reason=f"gave up after {now - start:.0f} s of retries: {reason}")
    delay = parse_retry_after(outcome.retry_after, now)
    if delay is None:
        delay = backoff(attempts, cfg, rand)
    else:
        # Honoured, but never past the row's age limit: a Retry-After of a year
        # must not park a trace beyond the point where it would be given up.
        delay = min(delay, max(cfg.max_age - (now - start), 0.0))
    return Decision(OutboxState.FAILED, "retry", next_attempt_at=now + delay, reason=reason)
