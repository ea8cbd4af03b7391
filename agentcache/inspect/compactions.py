"""What each compaction of a session cost and saved, in tokens and at each provider's prices.

A compaction (agent.Agent.compact) is a summary request on the live prefix, then a shorter L3. It costs the summary
request's computed and completion tokens, plus what the next request computes beyond what it would have computed
anyway (the entries appended since the turn before; negative when the summary request already computed them and the
compaction dropped them). It saves, on every later request, the prompt tokens it removed (`tokens_before -
tokens_after`), counted over the next PAYBACK_TURNS requests or until the next compaction.
"""

from __future__ import annotations

from typing import Any

from agentcache.inspect.cost import PER_TOKENS, price_tables, write_price_or_5m
from agentcache.records import Compaction, Request

PAYBACK_TURNS = 3  # the requests after a compaction its savings are counted over (agent.py decides over 2)


def compaction_rows(records: list[dict[str, Any]], cache_ttl: str = "5m") -> list[dict[str, Any]]:
    rows = []
    for index, record in enumerate(records):
        if record.get("type") != "compaction":
            continue
        compaction = Compaction.from_json(record)
        if compaction.tokens_before is None or compaction.tokens_after is None:
            continue  # written before compactions were accounted
        earlier = [Request.from_json(r) for r in records[:index] if r.get("type") == "request"]
        summary = next((r for r in reversed(earlier) if r.purpose == "compaction"), None)
        previous = next((r for r in reversed(earlier) if r.purpose is None), None)
        later = _later_requests(records[index + 1:])
        rows.append(_row(compaction, summary, previous, later, cache_ttl))
    return rows


def _later_requests(records: list[dict[str, Any]]) -> list[Request]:
    """The agent requests after a compaction, up to PAYBACK_TURNS, ending at the next compaction."""
    out = []
    for record in records:
        if record.get("type") == "compaction" or len(out) == PAYBACK_TURNS:
            break
        if record.get("type") == "request" and record.get("purpose") is None:
            out.append(Request.from_json(record))
    return out


def _row(compaction: Compaction, summary: Request | None, previous: Request | None, later: list[Request],
         cache_ttl: str) -> dict[str, Any]:
    before, after = compaction.tokens_before or 0, compaction.tokens_after or 0
    summary_computed = summary.usage.computed_tokens if summary else 0
    summary_completion = summary.usage.completion_tokens if summary else 0
    anyway = max(before - (previous.usage.prompt_tokens if previous else 0), 0)
    extra = later[0].usage.computed_tokens - anyway if later else 0
    saved = (before - after) * len(later)
    cost = summary_computed + summary_completion + extra
    usd = {}
    for name, table in price_tables()["providers"].items():
        spent = (summary_computed + extra) * write_price_or_5m(table, cache_ttl) + summary_completion * table["output"]
        usd[name] = (saved * table["cached_input"] - spent) / PER_TOKENS
    return {
        "turn": later[0].turn if later else (summary.turn if summary else None), "dropped": compaction.dropped,
        "trigger": compaction.trigger, "tokens_before": before, "tokens_after": after,
        "summary_computed_tokens": summary_computed, "summary_completion_tokens": summary_completion,
        "extra_prefill_tokens": extra, "cost_tokens": cost, "requests_after": len(later),
        "saved_tokens": saved, "net_tokens": saved - cost, "net_usd": usd,
    }
