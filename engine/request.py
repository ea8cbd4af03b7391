"""What a request carries in and what it returns: segments, sampling, usage, timings, trace."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Segment = str | list[int]
LogitsMask = Callable[[list[int]], Any]  # generated ids so far -> bool tensor of allowed ids, or None
ForcedTokens = Callable[[list[int]], list[int]]  # generated ids so far -> the tokens that must come next


def fields_dict(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__slots__}


@dataclass(slots=True)
class SamplingParams:
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass(slots=True)
class Request:
    segments: list[Segment]
    max_tokens: int = 256
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    salt: str | None = None
    logits_mask: LogitsMask | None = None
    forced_tokens: ForcedTokens | None = None  # a grammar's forced next tokens, drafted by speculative decoding
    return_logits: bool = False
    retention: list[str] | None = None  # per segment, a class of block_manager.RETENTION; None: all "turn" (LRU)
    speculate: str = "off"  # engine.speculate.MODES: off, lookup, draft (needs an engine with a draft model) or auto


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    cached_tokens: int = 0
    computed_tokens: int = 0
    completion_tokens: int = 0
    host_tokens: int = 0  # of cached_tokens, loaded from the host tier
    disk_tokens: int = 0  # of cached_tokens, loaded from the disk tier
    drafted_tokens: int = 0  # speculative decoding: tokens drafted and verified
    accepted_tokens: int = 0  # of drafted_tokens, kept (each saved a decode step)

    to_dict = fields_dict

    def add(self, other: Usage) -> None:
        for name in self.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(slots=True)
class Timings:
    queue_s: float = 0.0
    ttft_s: float = 0.0
    tpot_s: float = 0.0
    total_s: float = 0.0

    to_dict = fields_dict


@dataclass(slots=True)
class Trace:
    """Where the prefix match stopped and why: complete, capped, absent, evicted, salt, model, collision."""

    page_size: int = 0
    matched_pages: int = 0
    stop_reason: str = "absent"
    segment_tokens: list[int] = field(default_factory=list)
    tiers: dict[str, int] = field(default_factory=dict)  # cached tokens by tier: device, host, disk
    disk_rejected: list[dict] = field(default_factory=list)  # {hash, reason}: truncated, size, special (a link, FIFO,
    # socket or directory), checksum, format, foreign

    to_dict = fields_dict


@dataclass(slots=True)
class Result:
    token_ids: list[int]
    text: str
    finish_reason: str  # "stop" or "length"
    usage: Usage
    timings: Timings
    trace: Trace
    first_logits: Any = None
