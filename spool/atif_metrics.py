"""ATIF metrics (pure): an agent step's ``metrics`` from its request's usage and cost,
and a trajectory's ``final_metrics`` from its steps (spool.atif builds the steps).

``prompt_tokens`` includes cached tokens; reasoning and cache-write tokens go in
``extra``.  ``final_metrics`` totals are the rollout's final ``total_token_usage``
when known, else the sum of the steps' usage, plus the subagents' totals (their
requests are not in the root's steps); ``total_cost_usd`` is the priced requests'
sum, left out when none was priced.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence


def step(usage: Mapping | None, cost_usd: Any = None) -> dict | None:
    """The ``metrics`` of one agent step (None without usage; an unpriced cost is left out)."""
    if not usage:
        return None
    cost = float(cost_usd) if isinstance(cost_usd, (int, float)) and not isinstance(
        cost_usd, bool) else None
    return {"prompt_tokens": int(usage.get("input", 0)),
            "completion_tokens": int(usage.get("output", 0)),
            "cached_tokens": int(usage.get("cached", 0)),
            **({} if cost is None else {"cost_usd": cost}),
            "extra": {"reasoning_output_tokens": int(usage.get("reasoning", 0)),
                      "cache_write_input_tokens": int(usage.get("cache_write", 0)),
                      "total_tokens": int(usage.get("total", 0))}}


def final(steps: Sequence[Mapping], rollout_total: Mapping[str, int] | None,
          children: Sequence[dict] = ()) -> dict:
    """``final_metrics`` of a trajectory with ``steps``: the rollout's ``rollout_total``
    (spool usage keys) when known, else the steps' sum; plus the ``children``'s."""
    out = _own(steps, rollout_total)
    for c in children:
        fm = c["final_metrics"]
        out["total_prompt_tokens"] += fm["total_prompt_tokens"]
        out["total_completion_tokens"] += fm["total_completion_tokens"]
        out["total_cached_tokens"] += fm["total_cached_tokens"]
        for k in ("reasoning_output_tokens", "total_tokens", "model_requests"):
            out["extra"][k] += fm["extra"][k]
        if fm.get("total_cost_usd") is not None:
            out["total_cost_usd"] = round(out.get("total_cost_usd", 0.0)
                                          + fm["total_cost_usd"], 10)
        if fm["extra"].get("unpriced_model_requests"):
            out["extra"]["unpriced_model_requests"] = (
                out["extra"].get("unpriced_model_requests", 0)
                + fm["extra"]["unpriced_model_requests"])
    if children:
        out["extra"]["includes_subagents"] = len(children)
    return out


def _own(steps: Sequence[Mapping], total: Mapping[str, int] | None) -> dict:
    metrics = [st["metrics"] for st in steps if st.get("metrics")]
    if total:
        prompt, completion, cached = (int(total.get("input", 0)), int(total.get("output", 0)),
                                      int(total.get("cached", 0)))
        extra = {"reasoning_output_tokens": int(total.get("reasoning", 0)),
                 "total_tokens": int(total.get("total", 0)),
                 "source": "rollout total_token_usage"}
    else:
        prompt = sum(m["prompt_tokens"] for m in metrics)
        completion = sum(m["completion_tokens"] for m in metrics)
        cached = sum(m["cached_tokens"] for m in metrics)
        extra = {"reasoning_output_tokens": sum(m["extra"]["reasoning_output_tokens"]
                                                for m in metrics),
                 "total_tokens": sum(m["extra"]["total_tokens"] for m in metrics),
                 "source": "sum of the steps' usage"}
    extra["model_requests"] = sum(1 for st in steps if st.get("llm_call_count"))
    out = {"total_prompt_tokens": prompt, "total_completion_tokens": completion,
           "total_cached_tokens": cached, "total_steps": len(steps), "extra": extra}
    costs = [m["cost_usd"] for m in metrics if "cost_usd" in m]
    if costs:
        out["total_cost_usd"] = round(sum(costs), 10)
    unpriced = len(metrics) - len(costs)
    if unpriced:
        extra["unpriced_model_requests"] = unpriced
    return out
