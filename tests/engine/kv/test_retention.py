"""Retention classes in the pool: lower classes are evicted first, LRU within a class, a class decays to `turn`
after its TTL without a hit, a pool full of protected pages still admits new work; and through the engine, a
shared prefix kept with classes survives a flood that plain LRU lets evict it."""

from __future__ import annotations

import random

import pytest

from engine import Engine, EngineError, Request
from engine.kv.block_manager import RETENTION, RETENTION_TTL_S, BlockManager, page_hash

P = 4
TURN, PROJECT, PINNED = (RETENTION.index(name) for name in ("turn", "project", "pinned-soft"))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def cached_pages(bm: BlockManager, count: int, start: int, retention: int | None) -> list[int]:
    """`count` pages holding distinct full pages of tokens, registered, then released with class `retention`."""
    pages = bm.allocate([], count * P)
    for i, page_id in enumerate(pages):
        tokens = tuple(range(start + i * P, start + (i + 1) * P))
        bm.register(page_id, page_hash(0, tokens), tokens)
    bm.release(pages, None if retention is None else [retention] * count)
    return pages


def evicted_order(bm: BlockManager, count: int) -> list[int]:
    """The cached pages the next `count` fresh pages are taken from, in order."""
    victims = []
    for _ in range(count):
        cached = {p.page_id for p in bm.pages if p.hash != -1 and p.ref_count == 0}
        taken = bm.take_fresh()
        assert taken in cached
        victims.append(taken)
    return victims


def test_lower_classes_go_first_lru_within_a_class():
    bm = BlockManager(9, P, clock=Clock())
    pinned = cached_pages(bm, 3, 0, PINNED)  # the oldest
    project = cached_pages(bm, 3, 100, PROJECT)
    turn = cached_pages(bm, 3, 200, TURN)  # the most recent
    tails_first = lambda pages: pages[::-1]  # noqa: E731 - a release puts a chain's tail first in LRU order
    assert evicted_order(bm, 9) == tails_first(turn) + tails_first(project) + tails_first(pinned)


def test_without_classes_the_pool_is_plain_lru():
    bm = BlockManager(6, P, clock=Clock())
    older = cached_pages(bm, 3, 0, None)
    newer = cached_pages(bm, 3, 100, None)
    assert evicted_order(bm, 6) == older[::-1] + newer[::-1]


def test_a_class_not_hit_for_its_ttl_counts_as_turn_and_a_hit_renews_it():
    clock = Clock()
    bm = BlockManager(6, P, clock=clock)
    pinned = cached_pages(bm, 3, 0, PINNED)
    clock.now += RETENTION_TTL_S["pinned-soft"] + 1
    turn = cached_pages(bm, 3, 100, TURN)
    assert evicted_order(bm, 3) == pinned[::-1]  # expired: as old turn pages, they go before the newer turn pages
    bm = BlockManager(6, P, clock=clock)
    pinned = cached_pages(bm, 3, 0, PINNED)
    clock.now += RETENTION_TTL_S["pinned-soft"] + 1
    for page_id in pinned:  # hit again: matched and released by a request that gives no class
        bm.pin(page_id)
    bm.release(pinned)
    turn = cached_pages(bm, 3, 100, TURN)
    assert evicted_order(bm, 3) == turn[::-1]


def test_a_pool_of_protected_pages_still_admits_new_work():
    bm = BlockManager(4, P, clock=Clock())
    pinned = cached_pages(bm, 4, 0, PINNED)
    assert bm.free_pages() == 4
    assert sorted(bm.allocate([], 4 * P)) == sorted(pinned)


def flood_then_prefix(lm, retention: bool) -> int:
    """A shared prefix, then unrelated requests filling the pool twice over, then the prefix again: its cached
    tokens."""
    rng = random.Random(3)
    prefix = [rng.randrange(3, 500) for _ in range(64)]
    engine = Engine(lm, page_size=16, capacity_bytes=48 * engine_page_bytes(lm))  # 48 pages of 16 tokens
    classes = {"retention": ["project", "turn"]} if retention else {}
    engine.generate(Request([prefix, [7, 8, 9]], max_tokens=1, **classes))
    for _ in range(4):
        flood = [rng.randrange(3, 500) for _ in range(300)]
        engine.generate(Request([flood], max_tokens=1, **({"retention": ["turn"]} if retention else {})))
    return engine.generate(Request([prefix, [10, 11, 12]], max_tokens=1, **classes)).usage.cached_tokens


def engine_page_bytes(lm) -> int:
    return Engine(lm, page_size=16, capacity_bytes=1 << 20).page_bytes


def test_a_kept_prefix_survives_a_flood_that_lru_evicts(tiny):
    assert flood_then_prefix(tiny, retention=False) == 0
    assert flood_then_prefix(tiny, retention=True) == 64


def test_retention_must_name_a_known_class_per_segment(tiny):
    engine = Engine(tiny, page_size=16, capacity_bytes=1 << 20)
    with pytest.raises(EngineError, match="unknown retention class 'forever'"):
        engine.generate(Request([[5, 6, 7]], max_tokens=1, retention=["forever"]))
    with pytest.raises(EngineError, match="2 classes for 1 segments"):
        engine.generate(Request([[5, 6, 7]], max_tokens=1, retention=["turn", "turn"]))
