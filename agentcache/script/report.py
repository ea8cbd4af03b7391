"""The script report: per-agent and whole-script tokens, read back from each agent's session file.

Reusable tokens of a request: the longest run of leading blocks it shares with any request sent earlier in
the script (by `trace.script_seq`), in whole pages and capped below the prompt's last token, the way the
engine can hit. For a fork child's first request that is what its parent's context shares with it.
`shared_prefix_hit_rate` is the part of those reusable tokens actually served from the cache.
"""

from __future__ import annotations

from typing import Any

from agentcache.inspect.session_view import ratio, request_records
from agentcache.script.run import USAGE_FIELDS, ScriptRun


def shared_block_tokens(earlier: dict[str, Any], current: dict[str, Any]) -> int:
    """Tokens of `current`'s prompt in leading blocks identical (same hash, same place) to `earlier`'s, in whole
    pages and capped, like an engine hit, at the last full page before the prompt's final token."""
    segments = current.get("segment_tokens") or []
    shared = 0
    for index, (a, b) in enumerate(zip(earlier.get("blocks", []), current.get("blocks", []))):
        if a.get("hash") != b.get("hash") or index >= len(segments):
            break
        shared += segments[index]
    page = max(int(current.get("trace", {}).get("page_size") or 1), 1)
    prompt = int(current.get("usage", {}).get("prompt_tokens", 0))
    return min(shared, max(prompt - 1, 0)) // page * page


def reusable_in_order(requests: list[dict[str, Any]]) -> list[int]:
    """Reusable tokens of each request (in the given order) against all requests sent before it."""
    earlier = sorted(requests, key=lambda r: r["trace"]["script_seq"])
    rank = {id(r): i for i, r in enumerate(earlier)}
    return [max((shared_block_tokens(p, r) for p in earlier[: rank[id(r)]]), default=0) for r in requests]


def _sums(requests: list[dict[str, Any]], reusable: list[int]) -> dict[str, int]:
    sums = {name: sum(int(r["usage"][name]) for r in requests) for name in USAGE_FIELDS}
    sums["reusable_tokens"] = sum(reusable)
    sums["reusable_cached_tokens"] = sum(min(int(r["usage"]["cached_tokens"]), n) for r, n in zip(requests, reusable))
    return sums


def script_report(run: ScriptRun) -> dict[str, Any]:
    """The `--json` object: `agents` (one entry each, in script order) and `totals`."""
    per_agent = {name: request_records(session.records()) for name, session in run.sessions.items()}
    everything = [r for requests in per_agent.values() for r in requests]
    reusable = dict(zip(map(id, everything), reusable_in_order(everything)))
    agents = []
    for name, state in run.states.items():
        requests = per_agent.get(name, [])
        sums = _sums(requests, [reusable[id(r)] for r in requests])
        agents.append({"name": name, "role": state.role, "forked_from": state.parent, "session_id": state.session_id,
                       "turns": state.turns, "requests": len(requests), "outcome": state.outcome,
                       "answer": state.answer, "error": state.error, **sums,
                       "hit_rate": ratio(sums["cached_tokens"], sums["prompt_tokens"])})
    return {"script": run.script.name, "agents": agents, "totals": _totals(everything, list(reusable.values()))}


def _totals(requests: list[dict[str, Any]], reusable: list[int]) -> dict[str, Any]:
    sums = _sums(requests, reusable)
    return {
        "requests": len(requests), **sums,
        "no_cache_computed_tokens": sums["prompt_tokens"],
        "hit_rate": ratio(sums["cached_tokens"], sums["prompt_tokens"]),
        "shared_prefix_hit_rate": ratio(sums["reusable_cached_tokens"], sums["reusable_tokens"]),
        "computed_vs_no_cache": ratio(sums["computed_tokens"], sums["prompt_tokens"]),
    }
