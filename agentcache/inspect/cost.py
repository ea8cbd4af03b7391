"""Token cost in three classes: transmitted, billed (per-provider price tables in prices.yaml) and inference."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

from agentcache.errors import AgentcacheError
from agentcache.records import USAGE_FIELDS

PRICES_FILE = Path(__file__).with_name("prices.yaml")
PER_TOKENS = 1_000_000


@cache
def price_tables() -> dict[str, Any]:
    return yaml.safe_load(PRICES_FILE.read_text(encoding="utf-8"))


def minimum_cacheable(backend: str) -> int:
    return int(price_tables()["providers"].get(backend, {}).get("minimum_cacheable_tokens", 0))


def write_price_or_5m(table: dict[str, Any], cache_ttl: str) -> float:
    """The cache-write price for `cache_ttl`, or for 5m where the table has no price for it (auto, one price)."""
    prices = table["cache_write"]
    return cache_write_price(table, cache_ttl if isinstance(prices, dict) and cache_ttl in prices else "5m")


def cache_write_price(table: dict[str, Any], cache_ttl: str) -> float:
    """USD per million tokens written to the cache: the one price, or the price for this TTL."""
    price = table["cache_write"]
    if not isinstance(price, dict):
        return float(price)
    if cache_ttl not in price:
        raise AgentcacheError(f"cache TTL '{cache_ttl}' is not one of {', '.join(price)} ({PRICES_FILE.name})")
    return float(price[cache_ttl])


def billed(usage: dict[str, int], table: dict[str, Any], cache_ttl: str = "5m") -> float:
    """USD for one request: cache reads, uncached input written to the cache (at the TTL's rate), and output."""
    return (usage["cached_tokens"] * table["cached_input"]
            + usage["computed_tokens"] * cache_write_price(table, cache_ttl)
            + usage["completion_tokens"] * table["output"]) / PER_TOKENS


def cost_view(requests: list[dict[str, Any]], backend: str, cache_ttl: str = "5m") -> dict[str, Any]:
    """The `cost` object of the session view: sums over `requests` (rows with the four usage counts)."""
    usage = {name: sum(int(r[name]) for r in requests) for name in USAGE_FIELDS}
    tables = price_tables()
    return {
        "backend": backend,
        "transmitted": {"prompt_tokens": usage["prompt_tokens"], "completion_tokens": usage["completion_tokens"]},
        "billed": {"prices_date": tables["date"], "cache_ttl": cache_ttl,
                   "usd": {name: billed(usage, table, cache_ttl) for name, table in tables["providers"].items()},
                   "models": {name: table["model"] for name, table in tables["providers"].items()}},
        "inference": {"computed_tokens": usage["computed_tokens"],
                      "attended_tokens": usage["cached_tokens"] + usage["computed_tokens"],
                      "completion_tokens": usage["completion_tokens"]},
    }


def refill_cost(tokens: int, backend: str, cache_ttl: str, seconds_per_token: float | None) -> str:
    """What prefilling `tokens` again costs, in words: USD at the backend's prices (as cache writes), or, for the
    local engine, seconds at the measured prefill rate."""
    table = price_tables()["providers"].get(backend)
    if table is not None and table["input"]:
        return f"${tokens * write_price_or_5m(table, cache_ttl) / PER_TOKENS:.4f} at {table['model']} prices"
    if seconds_per_token is None:
        return "no prefill rate measured in this session yet"
    return f"about {tokens * seconds_per_token:.1f} s of prefill at this session's rate"
