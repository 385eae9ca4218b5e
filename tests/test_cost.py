"""Prices (spool.cost): the formula, unknown models, dates, tiers, trace bodies."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from genai_prices import Usage, calc_price

from spool import cost
from spool.trace import Event, Limits, SessionFacts
from spool.trace_build import build_part, build_turn_trace

NOV_2026 = datetime(2026, 11, 1, tzinfo=timezone.utc).timestamp()


def test_formula_uncached_cached_output_and_reasoning_not_billed_twice():
    u = {"input": 1011, "cached": 500, "cache_write": 0, "output": 107, "reasoning": 30,
         "total": 1118}
    p = cost.price_request(u, "gpt-5", NOV_2026)
    # gpt-5: $1.25 / M input, $0.125 / M cached input, $10 / M output
    assert p.usd == pytest.approx((511 * 1.25 + 500 * 0.125 + 107 * 10) / 1e6, abs=1e-12)
    assert p.flag is None
    more_reasoning = dict(u, reasoning=100)  # reasoning is inside output already
    assert cost.price_request(more_reasoning, "gpt-5", NOV_2026).usd == p.usd


@pytest.mark.parametrize("model", ["gpt-5", "gpt-5.1-codex-max", "o3", "gpt-5.6-sol"])
def test_agrees_with_the_library_on_the_whole_request(model):
    u = {"input": 250_000, "cached": 100_000, "output": 3_000, "reasoning": 1_000}
    when = datetime.fromtimestamp(NOV_2026, tz=timezone.utc)
    lib = calc_price(Usage(input_tokens=250_000, cache_read_tokens=100_000, output_tokens=3_000),
                     model_ref=model, provider_id="openai", genai_request_timestamp=when)
    assert cost.price_request(u, model, NOV_2026).usd == pytest.approx(float(lib.total_price),
                                                                        rel=1e-9)


def test_unknown_model_is_null_and_flagged_never_zero():
    p = cost.price_request({"input": 10, "output": 2}, "gpt-fake", NOV_2026)
    assert p.usd is None
    assert p.flag == "no price for model gpt-fake"
    none = cost.price_request({"input": 10}, None, NOV_2026)
    assert none.usd is None and "no model" in none.flag


def test_a_price_change_uses_the_request_date():
    # OpenAI cut o3 from $10 to $2 per million input tokens on 2025-06-10.
    u = {"input": 1_000_000}
    before = datetime(2025, 6, 9, 23, 59, tzinfo=timezone.utc).timestamp()
    after = datetime(2025, 6, 10, 0, 1, tzinfo=timezone.utc).timestamp()
    assert cost.price_request(u, "o3", before).usd == pytest.approx(10.0)
    assert cost.price_request(u, "o3", after).usd == pytest.approx(2.0)


def test_service_tier_selects_its_prices():
    u = {"input": 1000, "cached": 500, "output": 100}
    standard = cost.price_request(u, "gpt-5", NOV_2026).usd
    assert cost.price_request(u, "gpt-5", NOV_2026, "flex").usd == pytest.approx(standard / 2)
    assert cost.price_request(u, "gpt-5", NOV_2026, "priority").usd == pytest.approx(standard * 2)
    assert cost.price_request(u, "gpt-5", NOV_2026, "default").usd == standard


def test_total_is_partial_when_a_request_is_unpriced():
    t = cost.total([cost.Price(0.5), cost.Price(None, "no price for model x"), cost.Price(0.25)])
    assert (t.usd, t.priced, t.unpriced, t.partial) == (0.75, 2, 1, True)
    assert t.flags == ["no price for model x"]
    only_unknown = cost.total([cost.Price(None, "no price for model x")])
    assert only_unknown.usd is None
    assert cost.total([]).usd is None


def _events(turn: str, models: list[str]) -> list[Event]:
    evs = [Event(1, NOV_2026, "UserPromptSubmit", turn, {"prompt": "hi"})]
    i = 2
    for m in models:
        evs.append(Event(i, NOV_2026 + i, "PreModelRequest", turn, {"model": m}))
        evs.append(Event(i + 1, NOV_2026 + i + 1, "PostModelRequest", turn, {
            "model": m, "status": "completed",
            "token_usage": {"input_tokens": 2000, "cached_input_tokens": 1000,
                            "output_tokens": 100, "reasoning_output_tokens": 40,
                            "total_tokens": 2100}}))
        i += 2
    evs.append(Event(i, NOV_2026 + i, "Stop", turn, {"last_assistant_message": "ok"}))
    return evs


def test_add_cost_prices_each_request_and_flags_the_trace():
    part = build_part("t1", _events("t1", ["gpt-5", "gpt-fake", "gpt-5"]), Limits())
    body = build_turn_trace(SessionFacts("s1"), part).to_dict()
    cost.add_cost(body)
    steps = [s for s in body["steps"] if s["action"] == "model_request"]
    one = (1000 * 1.25 + 1000 * 0.125 + 100 * 10) / 1e6
    assert [s["cost_usd"] for s in steps] == [pytest.approx(one), None, pytest.approx(one)]
    assert body["cost_usd"] == pytest.approx(2 * one)
    assert body["cost_flags"] == ["no price for model gpt-fake",
                                  "partial: 1 of 3 model request(s) not priced"]


def test_add_cost_all_known_has_no_flags():
    part = build_part("t1", _events("t1", ["gpt-5"]), Limits())
    body = cost.add_cost(build_turn_trace(SessionFacts("s1"), part).to_dict())
    assert body["cost_flags"] == [] and body["cost_usd"] > 0


def test_add_cost_never_mutates_step_dicts_shared_with_another_body():
    from spool.trace_build import build_session_trace

    facts = SessionFacts("s1")
    part = build_part("t1", _events("t1", ["gpt-5"]), Limits())
    memo: dict = {}
    turn = build_turn_trace(facts, part).to_dict(memo)
    shared = [s for s in turn["steps"] if s["action"] == "model_request"][0]
    summary = build_session_trace(facts, [part]).to_dict(memo)
    cost.add_cost(turn)
    assert "cost_usd" not in shared  # the memo's dict is untouched
    cost.add_cost(summary)
    priced = [s for s in summary["steps"] if s["action"] == "model_request"]
    assert priced[0]["cost_usd"] == turn["cost_usd"] == summary["cost_usd"] > 0


def test_timeline_shows_cost_and_flags():
    from spool import timeline

    part = build_part("t1", _events("t1", ["gpt-5", "gpt-fake"]), Limits())
    text = timeline.render(cost.add_cost(build_turn_trace(SessionFacts("s1"), part).to_dict()))
    assert "cost $0.0024" in text
    assert "cost: no price for model gpt-fake" in text
    assert "$0.0024" in text.split("step(s)")[1] and "no price" in text.split("step(s)")[1]
