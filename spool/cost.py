"""Prices: what a model request cost, from its token usage, at its time.

Pure functions over spool's usage dicts (spool.trace.usage_from_tokens):
``input`` includes ``cached`` (and ``cache_write``), ``output`` includes
``reasoning``.  The price data is pydantic's ``genai-prices`` (bundled, works
offline), so a request is priced as the provider billed it on its day:

    (input - cached - cache_write) x input price + cached x cache-read price
    + cache_write x cache-write price + output x output price

Reasoning tokens are part of ``output`` and are not billed again.  A known
service tier (``flex``, ``priority``, ...) selects that tier's prices.

An unknown model is never priced at 0: its cost is ``None`` and a flag says
``no price for model X``.  Sums are *partial*: the sum of the priced requests,
``None`` when none was priced, and a flag for every model that was not priced
(see ``total``).  Trace bodies get ``cost_usd`` per model request and per trace
plus ``cost_flags`` (``add_cost``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, Iterable, Mapping

PROVIDER = "openai"  # Codex talks to OpenAI's Responses API
NO_PRICE = "no price for model {}"
NO_MODEL = "no model named for {} model request(s): not priced"


@dataclass(frozen=True, slots=True)
class Price:
    """One request's cost: ``usd`` is None when it could not be priced (``flag`` says why)."""

    usd: float | None
    flag: str | None = None


@dataclass(slots=True)
class Total:
    """A None-aware sum: ``usd`` sums the priced requests (None if none was);
    ``unpriced`` counts the requests without a price; ``flags`` says which models."""

    usd: float | None = None
    priced: int = 0
    unpriced: int = 0
    flags: list[str] = field(default_factory=list)

    @property
    def partial(self) -> bool:
        return self.unpriced > 0

    def add(self, p: Price) -> "Total":
        if p.usd is None:
            self.unpriced += 1
            if p.flag and p.flag not in self.flags:
                self.flags.append(p.flag)
        else:
            self.priced += 1
            self.usd = (self.usd or 0.0) + p.usd
        return self


def _n(usage: Mapping[str, Any], key: str) -> int:
    v = usage.get(key)
    return v if type(v) is int and v > 0 else 0  # not bool (a subclass of int)


def _when(at: float | datetime | None) -> datetime | None:
    if at is None or isinstance(at, datetime):
        return at
    return datetime.fromtimestamp(float(at), tz=timezone.utc)


def _day(at: float | datetime | None) -> str | None:
    """The UTC day (ISO) of ``at``; from epoch seconds through a cache per day number
    (a datetime per request was a fifth of the pricing's cost)."""
    if at is None:
        return None
    if isinstance(at, datetime):
        return at.date().isoformat()
    return _day_of(int(float(at) // 86400))


@lru_cache(maxsize=4096)
def _day_of(n: int) -> str:
    return datetime.fromtimestamp(n * 86400, tz=timezone.utc).date().isoformat()


@lru_cache(maxsize=4096)
def _rates(model: str, day: str | None, tier: str | None):
    """The per-token rates of ``model`` on ``day`` (UTC, ISO) in ``tier``, or None if unknown.

    Cached per (model, day, tier): genai-prices' price changes start on a date."""
    from genai_prices import Usage, calc_price

    when = datetime.fromisoformat(day).replace(tzinfo=timezone.utc) if day else None
    ctx = {"service_tier": tier} if tier else None
    million = 1_000_000
    try:
        # Price a million of each kind separately: the rates, straight from the library.
        kinds = {
            "input": Usage(input_tokens=million),
            "cached": Usage(input_tokens=million, cache_read_tokens=million),
            "cache_write": Usage(input_tokens=million, cache_write_tokens=million),
            "output": Usage(output_tokens=million),
        }
        return {k: float(calc_price(u, model_ref=model, provider_id=PROVIDER,
                                    genai_request_timestamp=when,
                                    price_context=ctx).total_price) / million
                for k, u in kinds.items()}
    except LookupError:
        return None


def _tiered(model: str) -> bool:
    """Whether the model's prices change with the request's size (then price exactly)."""
    from genai_prices import data_snapshot
    from genai_prices.types import ModelPrice, TieredPrices

    try:
        _, m = data_snapshot.get_snapshot().find_provider_model(model, None, PROVIDER, None)
    except LookupError:
        return False
    prices = [m.prices] if isinstance(m.prices, ModelPrice) else [c.prices for c in m.prices]
    prices += [v.prices for v in (m.price_variants or ())]
    return any(isinstance(v, TieredPrices) for p in prices for v in vars(p).values())


def price_request(usage: Mapping[str, Any] | None, model: str | None,
                  at: float | datetime | None = None, service_tier: str | None = None) -> Price:
    """The cost in USD of one model request from its usage dict, at its time ``at``
    (epoch seconds or datetime; None: today's prices).  Unknown model -> usd None + flag."""
    if not model:
        return Price(None, NO_MODEL.format(1))
    usage = usage or {}
    inp, cached, cw, out = (_n(usage, "input"), _n(usage, "cached"), _n(usage, "cache_write"),
                            _n(usage, "output"))
    if _tiered_cached(model):  # size-dependent prices: ask the library for this request
        return _exact(model, _when(at), service_tier, inp, cached, cw, out)
    rates = _rates(model, _day(at), service_tier or None)
    if rates is None:
        return Price(None, NO_PRICE.format(model))
    uncached = max(inp - cached - cw, 0)
    usd = (uncached * rates["input"] + cached * rates["cached"] + cw * rates["cache_write"]
           + out * rates["output"])
    return Price(round(usd, 10))


_tiered_cached = lru_cache(maxsize=1024)(_tiered)


def _exact(model, when, tier, inp, cached, cw, out) -> Price:
    from genai_prices import Usage, calc_price

    try:
        r = calc_price(Usage(input_tokens=inp, cache_read_tokens=cached, cache_write_tokens=cw,
                             output_tokens=out), model_ref=model, provider_id=PROVIDER,
                       genai_request_timestamp=when,
                       price_context={"service_tier": tier} if tier else None)
    except LookupError:
        return Price(None, NO_PRICE.format(model))
    return Price(round(float(r.total_price), 10))


def total(prices: Iterable[Price]) -> Total:
    """The None-aware sum of ``prices`` (see Total)."""
    t = Total()
    for p in prices:
        t.add(p)
    if t.usd is not None:
        t.usd = round(t.usd, 10)
    return t


def add_cost(body: dict) -> dict:
    """Add cost to a trace body (spool.trace.Trace.to_dict()), in place, and return it.

    Step dicts are replaced by priced copies, never mutated (bodies may share them).

    Each ``model_request`` step with usage gets ``cost_usd`` (null when unpriced);
    the trace gets ``cost_usd`` (the partial sum, see ``total``) and ``cost_flags``
    (strings; empty when every request was priced).  A trace whose usage came
    from the rollout (no per-request usage) is priced as one request of the
    trace's model at its start.
    """
    env = body.get("environment") or {}
    fallback_model = env.get("model")
    tier = env.get("service_tier")
    t = Total()
    with_usage = 0
    steps = body.get("steps") or []
    for i, s in enumerate(steps):
        if s.get("action") != "model_request" or not isinstance(s.get("usage"), dict):
            continue
        with_usage += 1
        p = price_request(s["usage"], s.get("model") or fallback_model,
                          s.get("started_at") or body.get("started_at"),
                          s.get("service_tier") or tier)
        # A copy: step dicts may be shared with another body (Trace.to_dict's step_memo).
        steps[i] = dict(s, cost_usd=p.usd)
        t.add(p)
    usage = body.get("usage") or {}
    if not with_usage and _n(usage, "total") + _n(usage, "input") + _n(usage, "output"):
        t.add(price_request(usage, fallback_model, body.get("started_at"), tier))
    body["cost_usd"] = None if t.usd is None else round(t.usd, 10)
    flags = list(t.flags)
    if t.unpriced and t.priced:
        flags.append(f"partial: {t.unpriced} of {t.priced + t.unpriced} model request(s) "
                     "not priced")
    body["cost_flags"] = flags
    return body
