"""The retry policy (spool/retry.py): pure, clock and random source injected."""
from __future__ import annotations

from email.utils import formatdate

import pytest

from spool.errors import SpoolError
from spool.retry import (RETRYABLE_STATUSES, Outcome, RetryConfig, backoff, classify, decide,
                         parse_retry_after)

CFG = RetryConfig(base=1.0, cap=300.0, max_attempts=5, max_age=3600.0, lease_seconds=45.0)


def test_retryable_statuses_are_exactly_the_documented_set():
    assert RETRYABLE_STATUSES == {408, 409, 425, 429, 500, 502, 503, 504}


@pytest.mark.parametrize("status,kind", [
    (200, "sent"), (201, "sent"), (204, "sent"),
    (408, "retry"), (409, "retry"), (425, "retry"), (429, "retry"), (500, "retry"),
    (502, "retry"), (503, "retry"), (504, "retry"),
    (400, "dead"), (404, "dead"), (413, "dead"), (422, "dead"), (501, "dead"), (505, "dead"),
    (401, "held"), (403, "held"), (301, "held"), (307, "held"),
])
def test_classify_status(status, kind):
    assert classify(Outcome(status=status)) == kind


def test_classify_transport_errors_and_forced_kinds():
    assert classify(Outcome(error_class="ConnectError")) == "retry"
    assert classify(Outcome(error_class="ReadTimeout")) == "retry"
    assert classify(Outcome(status=200, kind="retry")) == "retry"
    assert classify(Outcome(kind="held", attempted=False)) == "held"
    with pytest.raises(ValueError):
        Outcome(kind="maybe")


def test_full_jitter_backoff_grows_and_is_capped():
    assert backoff(1, CFG, lambda: 1.0) == 1.0
    assert backoff(2, CFG, lambda: 1.0) == 2.0
    assert backoff(5, CFG, lambda: 1.0) == 16.0
    assert backoff(30, CFG, lambda: 1.0) == 300.0
    assert backoff(10_000, CFG, lambda: 1.0) == 300.0
    assert backoff(5, CFG, lambda: 0.25) == 4.0
    assert backoff(5, CFG, lambda: 0.0) == 0.0


def test_parse_retry_after_seconds_and_http_date():
    now = 1_700_000_000.0
    assert parse_retry_after("2", now) == 2.0
    assert parse_retry_after(" 120 ", now) == 120.0
    assert parse_retry_after("-5", now) == 0.0
    assert parse_retry_after(formatdate(now + 90, usegmt=True), now) == pytest.approx(90, abs=1)
    assert parse_retry_after(formatdate(now - 90, usegmt=True), now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("", now) is None


def test_decide_retry_after_overrides_backoff():
    d = decide(Outcome(status=429, retry_after="7"), attempts=1, first_attempt_at=100.0,
               now=100.0, cfg=CFG, rand=lambda: 0.0)
    assert (d.state, d.outcome, d.next_attempt_at) == ("failed", "retry", 107.0)
    d = decide(Outcome(status=503), attempts=3, first_attempt_at=100.0, now=110.0, cfg=CFG,
               rand=lambda: 0.5)
    assert d.next_attempt_at == 110.0 + 2.0  # 0.5 * min(300, 1 * 2**2)


def test_decide_400_is_dead_with_the_message_and_401_is_held():
    d = decide(Outcome(status=400, message="name is required"), attempts=1,
               first_attempt_at=1.0, now=1.0, cfg=CFG)
    assert d.state == "dead" and "name is required" in d.reason and "400" in d.reason
    d = decide(Outcome(status=401, message="bad key"), attempts=1, first_attempt_at=1.0,
               now=1.0, cfg=CFG)
    assert d.state == "held" and d.outcome == "held"
    assert decide(Outcome(status=200), attempts=1, first_attempt_at=1.0, now=1.0,
                  cfg=CFG).state == "sent"


def test_max_attempts_counts_server_answers_not_offline_failures():
    d = decide(Outcome(status=500), attempts=5, first_attempt_at=0.0, now=10.0, cfg=CFG)
    assert d.state == "dead" and "gave up after 5 attempts" in d.reason
    d = decide(Outcome(status=500), attempts=4, first_attempt_at=0.0, now=10.0, cfg=CFG)
    assert d.state == "failed"
    # 50 connection failures in a row (offline): still retrying, within max_age
    d = decide(Outcome(error_class="ConnectError"), attempts=50, first_attempt_at=0.0,
               now=1000.0, cfg=CFG, http_attempts=0)
    assert d.state == "failed"


def test_max_age_gives_up():
    d = decide(Outcome(error_class="ConnectError"), attempts=3, first_attempt_at=0.0,
               now=3600.0, cfg=CFG, http_attempts=0)
    assert d.state == "dead" and "gave up after 3600 s" in d.reason


def test_config_from_env_defaults_and_validation():
    cfg = RetryConfig.from_env({})
    assert (cfg.base, cfg.cap, cfg.max_attempts, cfg.max_age, cfg.lease_seconds) == (
        1.0, 300.0, 20, 7 * 86400.0, 45.0)
    assert RetryConfig.from_env({"INFINIUM_TIMEOUT": "60"}).lease_seconds == 75.0
    cfg = RetryConfig.from_env({"SPOOL_RETRY_BASE": "0.5", "SPOOL_RETRY_CAP": "60",
                                "SPOOL_MAX_ATTEMPTS": "3", "SPOOL_MAX_AGE": "86400",
                                "SPOOL_LEASE_SECONDS": "10"})
    assert (cfg.base, cfg.cap, cfg.max_attempts, cfg.max_age, cfg.lease_seconds) == (
        0.5, 60.0, 3, 86400.0, 10.0)
    for env, name in [({"SPOOL_RETRY_BASE": "fast"}, "SPOOL_RETRY_BASE"),
                      ({"SPOOL_MAX_ATTEMPTS": "2.5"}, "SPOOL_MAX_ATTEMPTS"),
                      ({"SPOOL_MAX_ATTEMPTS": "0"}, "SPOOL_MAX_ATTEMPTS"),
                      ({"SPOOL_RETRY_CAP": "0.1"}, "SPOOL_RETRY_CAP"),
                      ({"SPOOL_LEASE_SECONDS": "nan"}, "SPOOL_LEASE_SECONDS")]:
        with pytest.raises(SpoolError) as exc:
            RetryConfig.from_env(env)
        assert name in exc.value.reason


def test_retry_after_is_honoured_but_never_past_the_age_limit():
    from spool.retry import Outcome, RetryConfig, decide

    cfg = RetryConfig(base=1.0, cap=300.0, max_attempts=20, max_age=7 * 86400.0,
                      lease_seconds=45.0)
    d = decide(Outcome(status=503, retry_after="31536000"), attempts=1, first_attempt_at=1000.0,
               now=1000.0, cfg=cfg, rand=lambda: 1.0)
    assert d.state == "failed" and d.next_attempt_at == 1000.0 + 7 * 86400.0
    d = decide(Outcome(status=503, retry_after="120"), attempts=1, first_attempt_at=1000.0,
               now=1000.0, cfg=cfg, rand=lambda: 1.0)
    assert d.next_attempt_at == 1120.0
