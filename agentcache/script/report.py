"""The script report: per-agent and whole-script tokens, read back from each agent's session file.

Reusable tokens of a request (`records.shared_block_tokens`): the longest run of leading blocks it shares
with any request sent earlier in the script (by `trace.script_seq`), in whole pages and capped below the
prompt's last token, the way the engine can hit. For a fork child's first request that is what its parent's context shares with it.
`shared_prefix_hit_rate` is the part of those reusable tokens actually served from the cache.
"""

from __future__ import annotations

from typing import Any

from agentcache.records import USAGE_FIELDS, Request, ratio, requests_of, shared_block_tokens
from agentcache.script.run import ScriptRun


def reusable_in_order(requests: list[Request]) -> list[int]:
    """Reusable tokens of each request (in the given order) against all requests sent before it."""
    earlier = sorted(requests, key=lambda r: r.trace["script_seq"])
    rank = {id(r): i for i, r in enumerate(earlier)}
    return [max((shared_block_tokens(p, r) for p in earlier[: rank[id(r)]]), default=0) for r in requests]


def _sums(requests: list[Request], reusable: list[int]) -> dict[str, int]:
    sums = {name: sum(getattr(r.usage, name) for r in requests) for name in USAGE_FIELDS}
    sums["reusable_tokens"] = sum(reusable)
    sums["reusable_cached_tokens"] = sum(min(r.usage.cached_tokens, n) for r, n in zip(requests, reusable))
    return sums


def script_report(run: ScriptRun) -> dict[str, Any]:
    """The `--json` object: `agents` (one entry each, in script order) and `totals`."""
    per_agent = {name: requests_of(session.records()) for name, session in run.sessions.items()}
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


def _totals(requests: list[Request], reusable: list[int]) -> dict[str, Any]:
    sums = _sums(requests, reusable)
    return {
        "requests": len(requests), **sums,
        "no_cache_computed_tokens": sums["prompt_tokens"],
        "hit_rate": ratio(sums["cached_tokens"], sums["prompt_tokens"]),
        "shared_prefix_hit_rate": ratio(sums["reusable_cached_tokens"], sums["reusable_tokens"]),
        "computed_vs_no_cache": ratio(sums["computed_tokens"], sums["prompt_tokens"]),
    }
