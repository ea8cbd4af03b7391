"""Fleet hit accounting: each replica's own prefix-cache counters (vLLM's or agentcache serve's Prometheus
`/metrics`) and the router's per-worker request counts, per replica and fleet-wide."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass

from agentcache.errors import AgentcacheError
from agentcache.records import ratio


@dataclass(frozen=True, slots=True)
class CounterNames:
    queries: str  # prompt tokens looked up in the prefix cache
    hits: str  # of those, tokens found there
    requests: str  # requests answered
    prompt_tokens: str  # prompt tokens of answered requests
    cached_tokens: str  # of those, tokens served from cached KV (what `usage.cached_tokens` adds up to)


COUNTERS = {  # per server kind
    "vllm": CounterNames("vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total",
                         "vllm:request_success_total", "vllm:prompt_tokens_total", "vllm:prompt_tokens_cached_total"),
    "agentcache": CounterNames("agentcache_prefix_cache_queries_total", "agentcache_prefix_cache_hits_total",
                               "agentcache_requests_total", "agentcache_prompt_tokens_total",
                               "agentcache_cached_tokens_total"),
}
ROUTED = "vllm_router_processed_requests_total"  # vllm-router's requests per worker, label `worker`
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass(slots=True)
class ReplicaStats:
    url: str
    kind: str  # "vllm" or "agentcache": whose counters it exposes
    queries: int  # prompt tokens looked up in its prefix cache
    hits: int  # of those, tokens found there
    requests: int  # requests it answered
    prompt_tokens: int  # their prompt tokens
    cached_tokens: int  # of those, served from cached KV
    routed: int | None = None  # requests the router sent it (None without a router)

    @property
    def hit_rate(self) -> float | None:
        return ratio(self.hits, self.queries)

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "hit_rate": self.hit_rate}


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Prometheus text exposition: (name, labels, value) per sample line."""
    samples = []
    for line in text.splitlines():
        found = SAMPLE.match(line.strip())
        if found is None or line.startswith("#"):
            continue
        name, labels, value = found.groups()
        try:
            samples.append((name, dict(LABEL.findall(labels or "")), float(value)))
        except ValueError:
            continue
    return samples


def total(samples: list[tuple[str, dict[str, str], float]], name: str) -> float | None:
    """The sum of a counter over all its label sets; None when no sample has that name."""
    values = [value for sample, _, value in samples if sample == name]
    return sum(values) if values else None


def fetch(url: str, path: str, timeout_s: float = 10.0) -> str:
    """`url` + `path` as text; an unreachable server is one clear line."""
    target = url.rstrip("/") + path
    try:
        with urllib.request.urlopen(target, timeout=timeout_s) as response:
            return response.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as exc:
        raise AgentcacheError(f"cannot read {target} ({getattr(exc, 'reason', exc)})") from None


def fetch_metrics(url: str) -> str:
    return fetch(url, "/metrics")


def router_workers(router: str) -> list[str]:
    """The worker URLs a vllm-router (or SGLang router) sends requests to."""
    try:
        urls = json.loads(fetch(router, "/list_workers")).get("urls")
    except (ValueError, AttributeError):
        urls = None
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise AgentcacheError(f"{router.rstrip('/')}/list_workers did not answer a list of worker URLs")
    return urls


def replica_stats(url: str) -> ReplicaStats:
    samples = parse_metrics(fetch_metrics(url))
    for kind, names in COUNTERS.items():
        if total(samples, names.queries) is not None:
            count = {name: int(total(samples, getattr(names, name)) or 0)
                     for name in ("queries", "hits", "requests", "prompt_tokens", "cached_tokens")}
            return ReplicaStats(url, kind, **count)
    raise AgentcacheError(f"{url}/metrics has no prefix-cache counters (neither vLLM's nor agentcache's); is it a "
                          "vLLM replica started with --enable-prefix-caching, or agentcache serve?")


def routed_per_worker(router_metrics_url: str) -> dict[str, int]:
    """Requests the router processed per worker URL, from its Prometheus counters."""
    counts: dict[str, int] = {}
    for name, labels, value in parse_metrics(fetch_metrics(router_metrics_url)):
        if name == ROUTED and "worker" in labels:
            worker = labels["worker"].rstrip("/")
            counts[worker] = counts.get(worker, 0) + int(value)
    return counts


def fleet_status(replicas: list[str], router_metrics: str | None = None) -> dict[str, object]:
    """Per replica and fleet-wide prefix-cache queries, hits, hit rate and requests (routed ones with a router)."""
    if not replicas:
        raise AgentcacheError("no replicas: pass --router URL or one --metrics URL per replica")
    stats = [replica_stats(url.rstrip("/")) for url in replicas]
    if router_metrics is not None:
        routed = routed_per_worker(router_metrics)
        for replica in stats:
            replica.routed = routed.get(replica.url, 0)
    queries, hits = sum(r.queries for r in stats), sum(r.hits for r in stats)
    fleet = {"queries": queries, "hits": hits, "hit_rate": ratio(hits, queries),
             "requests": sum(r.requests for r in stats),
             "routed": sum(r.routed for r in stats) if router_metrics is not None else None}
    return {"replicas": [r.to_json() for r in stats], "fleet": fleet}
