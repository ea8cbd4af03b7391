"""Counters for `agentcache serve` and their Prometheus text exposition (engine stats included)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from engine import Result, Usage

PREFIX = "agentcache"


@dataclass(slots=True)
class ServeMetrics:
    requests: int = 0
    usage: Usage = field(default_factory=Usage)  # summed over answered requests
    ttft_sum_s: float = 0.0
    context_tokens_saved: int = 0
    context_bytes_saved: int = 0
    contexts_created: int = 0
    errors: dict[int, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def observe(self, result: Result, context_tokens: int = 0, context_bytes: int = 0) -> None:
        with self._lock:
            self.requests += 1
            self.usage.add(result.usage)
            self.ttft_sum_s += result.timings.ttft_s
            self.context_tokens_saved += context_tokens
            self.context_bytes_saved += context_bytes

    def error(self, status: int) -> None:
        with self._lock:
            self.errors[status] = self.errors.get(status, 0) + 1

    def context_created(self) -> None:
        with self._lock:
            self.contexts_created += 1

    def exposition(self, engine_stats: dict[str, Any], contexts: int) -> str:
        """Prometheus text format, version 0.0.4."""
        with self._lock:
            rows = [
                ("requests_total", "counter", "Chat completions answered.", self.requests),
                ("prompt_tokens_total", "counter", "Prompt tokens of answered requests.", self.usage.prompt_tokens),
                ("cached_tokens_total", "counter", "Prompt tokens served from cached KV pages.",
                 self.usage.cached_tokens),
                ("computed_tokens_total", "counter", "Prompt tokens prefilled.", self.usage.computed_tokens),
                ("generation_tokens_total", "counter", "Completion tokens generated.", self.usage.completion_tokens),
                ("spec_decode_draft_tokens_total", "counter", "Tokens drafted by speculative decoding and verified.",
                 self.usage.drafted_tokens),
                ("spec_decode_accepted_tokens_total", "counter", "Drafted tokens kept (each saved a decode step).",
                 self.usage.accepted_tokens),
                ("context_tokens_saved_total", "counter", "Prompt tokens clients sent as a context id instead.",
                 self.context_tokens_saved),
                ("context_bytes_saved_total", "counter", "Message bytes clients sent as a context id instead.",
                 self.context_bytes_saved),
                ("contexts_created_total", "counter", "Explicit contexts created.", self.contexts_created),
                ("contexts", "gauge", "Explicit contexts currently stored.", contexts),
                ("prefix_cache_queries_total", "counter", "Prompt tokens looked up in the prefix cache.",
                 engine_stats["prefix_query_tokens"]),
                ("prefix_cache_hits_total", "counter", "Prompt tokens found in the prefix cache.",
                 engine_stats["prefix_hit_tokens"]),
                ("kv_pages_total", "gauge", "KV pages in the pool.", engine_stats["pages_total"]),
                ("kv_pages_used", "gauge", "KV pages referenced by running requests.", engine_stats["pages_used"]),
                ("kv_pages_cached", "gauge", "Unreferenced KV pages kept for reuse.", engine_stats["pages_cached"]),
                ("kv_evictions_total", "counter", "Cached KV pages evicted.", engine_stats["evictions"]),
            ]
            lines = []
            for name, kind, help_text, value in rows:
                lines += [f"# HELP {PREFIX}_{name} {help_text}", f"# TYPE {PREFIX}_{name} {kind}",
                          f"{PREFIX}_{name} {value}"]
            ttft = f"{PREFIX}_time_to_first_token_seconds"
            lines += [f"# HELP {ttft} Time to first token of answered requests.", f"# TYPE {ttft} summary",
                      f"{ttft}_sum {self.ttft_sum_s:.6f}", f"{ttft}_count {self.requests}"]
            errors = f"{PREFIX}_request_errors_total"
            lines += [f"# HELP {errors} Requests answered with an error status.", f"# TYPE {errors} counter"]
            lines += [f'{errors}{{status="{status}"}} {count}' for status, count in sorted(self.errors.items())]
        return "\n".join(lines) + "\n"
