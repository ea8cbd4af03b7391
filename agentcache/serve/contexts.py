"""Explicit contexts for `agentcache serve`: stored message prefixes with an id, an owner, a TTL and an LRU bound."""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agentcache.errors import AgentcacheError

DEFAULT_TTL_S = 3600
MAX_TTL_S = 86_400
MAX_CONTEXTS = 64


class ContextNotFound(AgentcacheError):
    """An unknown, deleted, evicted or expired context id, or one another tenant (cache_salt) owns."""


@dataclass(slots=True)
class StoredContext:
    context_id: str
    messages: list[dict[str, Any]]
    tokens: int
    bytes: int
    expires_at: float
    salt: str | None = None  # its owner: the cache_salt it was created with (None: the unsalted tenant)

    def to_dict(self) -> dict[str, Any]:
        return {"context_id": self.context_id, "object": "context", "tokens": self.tokens, "bytes": self.bytes,
                "expires_at": int(self.expires_at)}


def same_owner(salt: str | None, asked: str | None) -> bool:
    """Whether `asked` is the salt `salt` (compared in constant time; None is only None)."""
    if salt is None or asked is None:
        return salt is asked
    return hmac.compare_digest(salt.encode(), asked.encode())


class ContextStore:
    """Contexts by id, each seen only by its owner (the cache_salt that created it). Past `limit` contexts, the
    owner holding the most loses its least recently used one, so a tenant that floods the store evicts its own."""

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
                self._evict()
        return entry

    def _evict(self) -> None:
        """Drop the least recently used context of the owner holding the most."""
        held = Counter(entry.salt for entry in self._items.values())
        most = max(held.values())
        del self._items[next(cid for cid, entry in self._items.items() if held[entry.salt] == most)]

    def get(self, context_id: str, salt: str | None = None) -> StoredContext:
        """The context, for its owner; anyone else is told it does not exist, in the same words as for an unknown id."""
        with self._lock:
            entry = self._items.get(context_id)
            if entry is None or not same_owner(entry.salt, salt):
                raise ContextNotFound(f"no context '{context_id}' for this cache_salt (unknown, deleted, evicted, "
                                      "or created with another cache_salt); create one with POST /v1/contexts")
            if entry.expires_at <= self.clock():
                del self._items[context_id]
                raise ContextNotFound(f"context '{context_id}' expired; create it again with POST /v1/contexts")
            self._items.move_to_end(context_id)
            return entry

    def delete(self, context_id: str, salt: str | None = None) -> None:
        self.get(context_id, salt)
        with self._lock:
            self._items.pop(context_id, None)

    def __len__(self) -> int:
        return len(self._items)
