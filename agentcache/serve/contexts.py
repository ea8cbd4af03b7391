"""Explicit contexts for `agentcache serve`: stored message prefixes with an id, a TTL and an LRU bound."""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agentcache.errors import AgentcacheError

DEFAULT_TTL_S = 3600
MAX_TTL_S = 86_400
MAX_CONTEXTS = 64


class ContextNotFound(AgentcacheError):
    """An unknown, deleted, evicted or expired context id."""


@dataclass(slots=True)
class StoredContext:
    context_id: str
    messages: list[dict[str, Any]]
    tokens: int
    bytes: int
    expires_at: float
    salt: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"context_id": self.context_id, "object": "context", "tokens": self.tokens, "bytes": self.bytes,
                "expires_at": int(self.expires_at)}


class ContextStore:
    """Contexts by id; the least recently used one goes when more than `limit` exist."""

    def __init__(self, limit: int = MAX_CONTEXTS, clock: Callable[[], float] = time.time) -> None:
        self.limit = limit
        self.clock = clock
        self._items: OrderedDict[str, StoredContext] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, messages: list[dict[str, Any]], tokens: int, size: int, ttl_s: float,
            salt: str | None = None) -> StoredContext:
        entry = StoredContext("ctx_" + secrets.token_hex(12), messages, tokens, size, self.clock() + ttl_s, salt)
        with self._lock:
            self._items[entry.context_id] = entry
            while len(self._items) > self.limit:
                self._items.popitem(last=False)
        return entry

    def get(self, context_id: str) -> StoredContext:
        with self._lock:
            entry = self._items.get(context_id)
            if entry is not None and entry.expires_at <= self.clock():
                del self._items[context_id]
                raise ContextNotFound(f"context '{context_id}' expired; create it again with POST /v1/contexts")
            if entry is None:
                raise ContextNotFound(f"no context '{context_id}' (unknown, deleted or evicted); "
                                      "create one with POST /v1/contexts")
            self._items.move_to_end(context_id)
            return entry

    def delete(self, context_id: str) -> None:
        self.get(context_id)
        with self._lock:
            self._items.pop(context_id, None)

    def __len__(self) -> int:
        return len(self._items)
