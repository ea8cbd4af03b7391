"""Page bookkeeping for the KV pool: chained page hashes, refcounts, a lazy LRU free queue with retention classes,
counters."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import xxhash

from engine.errors import EngineCapacityError

EVICTED_POOLS = 4  # the eviction history holds the hashes of this many pools' worth of evicted pages
# Retention classes, in eviction order: a cached page of a lower class goes before any of a higher one, least
# recently used first within a class. A page not hit for its class's TTL counts as `turn` again, so nothing is kept
# forever and a full pool always admits new work. Requests without classes are all `turn`: plain LRU.
RETENTION = ("turn", "project", "pinned-soft")
RETENTION_TTL_S = {"turn": 0.0, "project": 600.0, "pinned-soft": 3600.0}


@dataclass(slots=True)
class Page:
    page_id: int
    ref_count: int = 0
    hash: int = -1
    token_ids: tuple[int, ...] = ()
    origin: Origin | None = None  # set on a request's first page
    retention: int = 0  # index into RETENTION: the highest class a request using it gave it
    last_hit: float = 0.0  # when a request last used it (the clock of its BlockManager)


Origin = tuple[str, int]  # (model fingerprint, root hash): what a request's page chain is rooted in


@dataclass(slots=True)
class Match:
    """The verified cached prefix of a prompt and why it stopped where it did."""

    page_ids: list[int]
    stop_reason: str  # "complete", "capped", "absent", "evicted", "salt", "model", "collision"


@dataclass(slots=True)
class Counters:
    query_tokens: int = 0
    hit_tokens: int = 0
    queries: int = 0
    evictions: int = 0


def root_hash(fingerprint: str, salt: str | None) -> int:
    return xxhash.xxh3_64_intdigest(f"{fingerprint}\x00{salt or ''}".encode())


def page_hash(parent: int, token_ids: list[int] | tuple[int, ...]) -> int:
    h = xxhash.xxh3_64()
    h.update(parent.to_bytes(8, "little"))
    h.update(np.asarray(token_ids, dtype=np.int64).tobytes())
    return h.intdigest()


def chain_hashes(token_ids: list[int], page_size: int, parent: int) -> list[int]:
    """The chained hashes of every full page of `token_ids`, the first one's parent being `parent`."""
    hashes = []
    for start in range(0, len(token_ids) - page_size + 1, page_size):
        parent = page_hash(parent, token_ids[start : start + page_size])
        hashes.append(parent)
    return hashes


@dataclass
class BlockManager:
    """Owns which page holds what; never touches tensors. Every index is bounded by the pool: `hash_to_page` and
    `first_page_roots` (first-page token ids -> origins) hold only pages that are there now, `evicted` the last
    EVICTED_POOLS pools' evictions. It never hashes: a request's page hashes come with it."""

    num_pages: int
    page_size: int
    pages: list[Page] = field(init=False)
    hash_to_page: dict[int, int] = field(default_factory=dict)
    free: OrderedDict[int, None] = field(init=False)
    counters: Counters = field(default_factory=Counters)
    evicted: OrderedDict[int, None] = field(default_factory=OrderedDict)
    first_page_roots: dict[tuple[int, ...], set[Origin]] = field(default_factory=dict)
    on_evict: Callable[[int, int, tuple[int, ...]], None] | None = None  # (page id, hash, tokens) before reuse
    clock: Callable[[], float] = time.monotonic  # what retention TTLs are measured with

    def __post_init__(self) -> None:
        self.pages = [Page(i) for i in range(self.num_pages)]
        self.free = OrderedDict.fromkeys(range(self.num_pages))

    def match(self, token_ids: list[int], hashes: list[int], origin: Origin) -> Match:
        """Longest verified run of cached full pages, capped so at least one prompt token is computed; `hashes` are
        the prompt's page hashes, chained from `origin`'s root."""
        limit = (len(token_ids) - 1) // self.page_size
        page_ids: list[int] = []
        reason = "complete"
        for i, h in enumerate(hashes):
            if i >= limit:
                reason = "capped"
                break
            page_id = self.hash_to_page.get(h)
            chunk = tuple(token_ids[i * self.page_size : (i + 1) * self.page_size])
            if page_id is None:
                reason = self._miss_reason(h, i, chunk, origin)
                break
            if self.pages[page_id].token_ids != chunk:
                reason = "collision"
                break
            page_ids.append(page_id)
        self.counters.queries += 1
        self.counters.query_tokens += len(token_ids)
        self.counters.hit_tokens += len(page_ids) * self.page_size
        return Match(page_ids, reason)

    def _miss_reason(self, h: int, index: int, chunk: tuple[int, ...], origin: Origin) -> str:
        if h in self.evicted:
            return "evicted"
        if index == 0:
            fingerprint, root = origin
            roots = self.first_page_roots.get(chunk, set())
            if any(fp != fingerprint for fp, _ in roots):
                return "model"
            if any(r != root for _, r in roots):
                return "salt"
        return "absent"

    def pages_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.page_size)

    def free_pages(self) -> int:
        """Pages that can take new data: empty ones and cached ones nobody pins (evicted when taken)."""
        return len(self.free)

    def was_evicted(self, h: int) -> bool:
        """Page h was in the pool and its page was reused (within the eviction history)."""
        return h in self.evicted

    def count_hits(self, tokens: int) -> None:
        """Add prompt tokens found below the pool (host, disk) to the prefix hit counter."""
        self.counters.hit_tokens += tokens

    def available(self, reuse: list[int]) -> int:
        """Free pages left for new data once the matched pages `reuse` are pinned."""
        pinned_from_free = sum(1 for p in reuse if self.pages[p].ref_count == 0)
        return len(self.free) - pinned_from_free

    def allocate(self, reuse: list[int], total_tokens: int) -> list[int]:
        """Pin the matched pages and take fresh ones for the rest; all or nothing."""
        need = self.pages_needed(total_tokens) - len(reuse)
        have = self.available(reuse)
        if need > have:
            raise EngineCapacityError(
                f"request needs {need} new KV pages ({total_tokens} tokens, {self.page_size} per page) "
                f"but only {have} of {self.num_pages} can be freed; raise the pool capacity or shorten the request"
            )
        for page_id in reuse:
            self.pin(page_id)
        return list(reuse) + [self.take_fresh() for _ in range(need)]

    def lookup(self, h: int, token_ids: tuple[int, ...]) -> int | None:
        """The page cached under h if it holds exactly these tokens."""
        page_id = self.hash_to_page.get(h)
        if page_id is None or self.pages[page_id].token_ids != token_ids:
            return None
        return page_id

    def pin(self, page_id: int) -> None:
        page = self.pages[page_id]
        if page.ref_count == 0:
            del self.free[page_id]
        page.ref_count += 1

    def take_fresh(self) -> int:
        """One pinned empty page: an empty one, else the cached page of the lowest retention class, least recently
        used first; the caller checks `free_pages`."""
        page_id = self._victim()
        del self.free[page_id]
        page = self.pages[page_id]
        if page.hash != -1:
            if self.on_evict is not None:
                self.on_evict(page_id, page.hash, page.token_ids)
            self._remember_evicted(page.hash)
            self._forget(page)
            self.counters.evictions += 1
        page.ref_count, page.retention = 1, 0
        return page_id

    def _victim(self) -> int:
        """The first free page in LRU order of the lowest effective class (a class decays to `turn` once its page
        was not hit for its TTL); empty pages are at the front."""
        now, best, best_class = self.clock(), -1, len(RETENTION)
        for page_id in self.free:
            page = self.pages[page_id]
            cls = page.retention if page.hash != -1 else 0
            if cls and now - page.last_hit > RETENTION_TTL_S[RETENTION[cls]]:
                cls = 0
            if cls < best_class:
                best, best_class = page_id, cls
                if cls == 0:
                    break
        return best

    def _forget(self, page: Page) -> None:
        """Drop the page's hash and first-page origin from the indexes, leaving it empty."""
        if self.hash_to_page.get(page.hash) == page.page_id:
            del self.hash_to_page[page.hash]
        if page.origin is not None:
            roots = self.first_page_roots.get(page.token_ids, set())
            roots.discard(page.origin)
            if not roots:
                self.first_page_roots.pop(page.token_ids, None)
        page.hash, page.token_ids, page.origin = -1, (), None

    def _remember_evicted(self, h: int) -> None:
        self.evicted[h] = None
        if len(self.evicted) > EVICTED_POOLS * self.num_pages:
            self.evicted.popitem(last=False)

    def register(self, page_id: int, h: int, token_ids: tuple[int, ...], first: Origin | None = None) -> None:
        """Index a page that now holds a full page of KV; an existing page for the same hash wins."""
        page = self.pages[page_id]
        if page.hash == h or h in self.hash_to_page:
            return
        if page.hash != -1:
            self._forget(page)
        page.hash, page.token_ids, page.origin = h, token_ids, first
        self.hash_to_page[h] = page_id
        self.evicted.pop(h, None)
        if first is not None:
            self.first_page_roots.setdefault(token_ids, set()).add(first)

    def release(self, page_ids: list[int], retention: list[int] | None = None) -> None:
        """Unpin; cached pages join the LRU tail, tails of a chain first so they are evicted first. `retention`: each
        page's class index for the request that used it (a page keeps the highest it was given); it was hit now."""
        now = self.clock()
        for i in reversed(range(len(page_ids))):
            page_id = page_ids[i]
            page = self.pages[page_id]
            page.last_hit = now
            if retention is not None:
                page.retention = max(page.retention, retention[i])
            page.ref_count -= 1
            if page.ref_count > 0:
                continue
            self.free[page_id] = None
            if page.hash == -1:
                self.free.move_to_end(page_id, last=False)

    def stats(self) -> dict[str, int]:
        used = sum(1 for p in self.pages if p.ref_count > 0)
        cached = sum(1 for p in self.pages if p.ref_count == 0 and p.hash != -1)
        c = self.counters
        return {
            "pages_total": self.num_pages,
            "pages_used": used,
            "pages_cached": cached,
            "pages_free": self.num_pages - used - cached,
            "prefix_queries": c.queries,
            "prefix_query_tokens": c.query_tokens,
            "prefix_hit_tokens": c.hit_tokens,
            "evictions": c.evictions,
        }
