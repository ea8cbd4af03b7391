"""The anthropic backend: Messages API requests with cache_control breakpoints at the layer boundaries.

L1 (system prompt, role, tool schemas) and L2 (repo) go in `system` as text blocks, L3 in `messages`.
Breakpoints: the end of L1, the end of L2 and the last turn — each only when the prompt up to it reaches the
model's minimum cacheable length (see anthropic_cache.yaml, kept with the date it was checked). With ttl "auto"
each request's breakpoints get the TTL that is cheaper for the expected gap to the next request (break_even_ttl).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import anthropic
import yaml

from agentcache.backends import GenSettings, Reply
from agentcache.backends.remote import ReplyChecker, ServerModel, call_with_retries
from agentcache.errors import AgentcacheError
from agentcache.render import block_message
from layers import Block, Context, Layer, TiktokenCounter, ToolSpec

CACHE_TABLE = Path(__file__).with_name("anthropic_cache.yaml")
ROLE_OF = {"user": "user", "assistant": "assistant", "tool": "user"}
GAPS_KEPT = 5  # the expected gap to the next request: the median of this many recent gaps


@cache
def cache_table() -> dict[str, Any]:
    return yaml.safe_load(CACHE_TABLE.read_text(encoding="utf-8"))


def min_cacheable_tokens(model: str) -> int:
    """The model's minimum cacheable prompt length: the longest matching id prefix in the table."""
    table = cache_table()
    matches = [prefix for prefix in table["min_cacheable_tokens"] if model.startswith(prefix)]
    return table["min_cacheable_tokens"][max(matches, key=len)] if matches else table["default_min_cacheable_tokens"]


def break_even_ttl(gap_s: float | None) -> str:
    """The cheaper TTL for a breakpoint whose prefix is next read `gap_s` seconds from now (None: not known yet).

    Within 5 minutes both TTLs are read back and a read renews the 5m entry, so 5m's cheaper write wins. Past an
    hour neither survives, and again 5m's write is cheaper. In between, a 5m entry has expired and is written
    again on every request, while a 1h entry written once is read back: 1h wins as soon as one write plus one read
    (2 + 0.1 of the base input price) is cheaper than two 5m writes (2 x 1.25)."""
    table = cache_table()
    short, long, read = table["ttls"]["5m"], table["ttls"]["1h"], table["read_price_multiplier"]
    if gap_s is None or gap_s <= short["seconds"] or gap_s > long["seconds"]:
        return "5m"
    return "1h" if long["write_price_multiplier"] + read < 2 * short["write_price_multiplier"] else "5m"


def l3_text(block: Block) -> tuple[str, str]:
    message = block_message(block)
    text = f"Tool result:\n{message['content']}" if message["role"] == "tool" else message["content"]
    return ROLE_OF[message["role"]], text


class AnthropicBackend(ServerModel):
    name = "anthropic"
    tool_format = "json"

    def __init__(self, model: str, api_key: str | None = None, base_url: str | None = None, ttl: str = "5m",
                 timeout_s: float = 600.0, clock: Callable[[], float] = time.monotonic) -> None:
        """`ttl`: 5m or 1h for the L1 and L2 breakpoints, or auto (every breakpoint's, by break_even_ttl)."""
        if ttl != "auto" and ttl not in cache_table()["ttls"]:
            raise AgentcacheError(f"cache TTL '{ttl}' is not one of {', '.join([*cache_table()['ttls'], 'auto'])}")
        self.model, self.ttl, self.clock = model, ttl, clock
        self._sent: list[float] = []  # when the last requests were sent (clock), for the expected gap
        self._last_ttl: str | None = None  # the TTL the last request's breakpoints used
        self.base_url = base_url or "the Anthropic API"
        self.client = anthropic.Anthropic(api_key=api_key, base_url=base_url or None, max_retries=0,
                                          timeout=timeout_s)
        self.minimum = min_cacheable_tokens(model)
        self._counter = TiktokenCounter()
        self._checker = ReplyChecker()

    def window(self) -> int:
        return cache_table()["context_window"]

    def count_tokens(self, context: Context) -> int:
        """An estimate (tiktoken): Claude's tokenizer is not available offline."""
        return sum(self._counter.count(block_message(b)["content"]) for b in context)

    def parse(self, text: str, tools: list[ToolSpec], enabled: set[str]) -> Any:
        return self._checker.parse(text, tools, enabled)

    def request(self, context: Context, settings: GenSettings, ttl: str | None = None) -> dict[str, Any]:
        """The Messages API body: system blocks, alternating messages, at most three breakpoints.

        Sampling settings are left to the model's defaults (the current SDK no longer takes temperature)."""
        system = [{"type": "text", "text": block_message(b)["content"]} for b in context.prefix]
        messages: list[dict[str, Any]] = []
        for block in context.l3:
            role, text = l3_text(block)
            if messages and messages[-1]["role"] == role:
                messages[-1]["content"].append({"type": "text", "text": text})
            else:
                messages.append({"role": role, "content": [{"type": "text", "text": text}]})
        self._mark(context, system, messages, ttl or self.chosen_ttl())
        return {"model": self.model, "max_tokens": settings.max_tokens, "system": system, "messages": messages}

    def chosen_ttl(self) -> str:
        """The L1/L2 breakpoints' TTL for the next request: the configured one, or for auto the break-even TTL of
        the median of the recent gaps between requests (the next gap is expected to look like them)."""
        if self.ttl != "auto":
            return self.ttl
        times = [*self._sent, self.clock()]  # the gap since the last request is one of them
        gaps = [b - a for a, b in zip(times, times[1:])]
        return break_even_ttl(statistics.median(gaps) if gaps else None)

    def _mark(self, context: Context, system: list[dict[str, Any]], messages: list[dict[str, Any]],
              ttl: str) -> None:
        """`ttl` for the L1 and L2 breakpoints; the last turn's is 5m unless auto chose 1h (a 1h breakpoint may not
        follow a 5m one)."""
        counts = [self._counter.count(part["text"]) for part in system]
        l1 = sum(1 for b in context.prefix if b.layer == Layer.L1)
        marks: list[tuple[dict[str, Any], int, str]] = []
        if l1:
            marks.append((system[l1 - 1], sum(counts[:l1]), ttl))
        if len(system) > l1:
            marks.append((system[-1], sum(counts), ttl))
        if messages:
            total = sum(counts) + sum(self._counter.count(p["text"]) for m in messages for p in m["content"])
            marks.append((messages[-1]["content"][-1], total, ttl if self.ttl == "auto" else "5m"))
        for part, tokens, ttl in marks[: cache_table()["max_breakpoints"]]:
            if tokens >= self.minimum:
                part["cache_control"] = {"type": "ephemeral", **({"ttl": ttl} if ttl != "5m" else {})}

    def prefix_expired(self) -> bool:
        """Whether the cache entries the last request wrote or read have expired by now: longer ago than the TTL
        it used, with no request since to renew them. The next request writes its whole prompt again anyway."""
        if not self._sent or self._last_ttl is None:
            return False
        return self.clock() - self._sent[-1] > cache_table()["ttls"][self._last_ttl]["seconds"]

    def complete(self, context: Context, tools: list[ToolSpec], enabled: set[str], settings: GenSettings) -> Reply:
        ttl = self.chosen_ttl()
        body = self.request(context, settings, ttl)
        self._sent = [*self._sent, self.clock()][-(GAPS_KEPT + 1):]
        self._last_ttl = ttl
        started = time.perf_counter()
        response = call_with_retries(anthropic, self.base_url, self.client.messages.create, **body)
        elapsed = time.perf_counter() - started
        usage = response.usage
        written = usage.cache_creation_input_tokens or 0
        read = usage.cache_read_input_tokens or 0
        counts = {"prompt_tokens": usage.input_tokens + written + read, "cached_tokens": read,
                  "computed_tokens": usage.input_tokens + written, "completion_tokens": usage.output_tokens,
                  "cache_write_tokens": written}
        text = "".join(part.text for part in response.content if part.type == "text")
        finish = "length" if response.stop_reason == "max_tokens" else "stop"
        timings = {"queue_s": 0.0, "ttft_s": elapsed, "tpot_s": 0.0, "total_s": elapsed}  # non-streaming
        return Reply(text, finish, counts, timings, {"response_id": response.id, "cache_ttl": ttl}, 0)
