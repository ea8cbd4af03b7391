"""The backend protocol: an assembled context and the enabled tools in, a reply with usage out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from layers import Context, ToolSpec


@dataclass(slots=True)
class GenSettings:
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    salt: str | None = None
    tool_required: bool = False  # this reply must be a tool call (local: masked; OpenAI: the reply schema)
    answer_line: bool = False  # an answer here is one short line (local: masked; native format: after "Answer: ")
    routing_key: str | None = None  # which requests belong together, for a router in front of replicas (OpenAI)


@dataclass(slots=True)
class Reply:
    """Raw reply text plus what the request cost; the loop parses the text."""

    text: str
    finish_reason: str
    usage: dict[str, int]
    timings: dict[str, float]
    trace: dict[str, Any] = field(default_factory=dict)
    prefix_tokens: int = 0
    routing_key: str | None = None  # the routing key the request carried (openai backend)
    replica: str | None = None  # the replica that served it, where the server says so


class Backend(Protocol):
    """Everything the agent reads of a backend; each backend defines all of it (nothing is probed with getattr)."""

    name: str
    tool_format: str  # how replies are written: "json" or "native" (agentcache.render)
    layout: str | None  # how L1+L2 are laid out in the prompt, recorded so inspect rebuilds it; None: not known

    @property
    def model_name(self) -> str: ...

    @property
    def fingerprint(self) -> str | None: ...  # the weights' identity, where the backend knows them (local)

    def segment_counts(self, context: Context) -> list[int] | None: ...  # tokens per prompt segment, None: unknown

    def prefix_expired(self) -> bool: ...  # whether the cached prefix has expired by now (hosted caches' TTL)

    def complete(self, context: Context, tools: list[ToolSpec], enabled: set[str], settings: GenSettings) -> Reply: ...

    def parse(self, text: str, tools: list[ToolSpec], enabled: set[str]) -> Any: ...

    def count_tokens(self, context: Context) -> int: ...

    def window(self) -> int: ...
