"""The explicit context store: ids, TTL on a given clock, LRU bound, delete."""

import pytest

from agentcache.serve.contexts import ContextNotFound, ContextStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_ttl_expires_on_the_clock_and_says_so():
    clock = Clock()
    store = ContextStore(clock=clock)
    entry = store.add([{"role": "system", "content": "s"}], tokens=10, size=40, ttl_s=60)
    assert entry.to_dict()["expires_at"] == 1060
    clock.now = 1059.9
    assert store.get(entry.context_id) is entry
    clock.now = 1060.0
    with pytest.raises(ContextNotFound, match="expired"):
        store.get(entry.context_id)
    with pytest.raises(ContextNotFound, match="unknown"):  # an expired one is dropped
        store.get(entry.context_id)


def test_lru_bound_drops_the_least_recently_used_and_delete_removes():
    store = ContextStore(limit=2, clock=Clock())
    a, b = (store.add([], 1, 1, 60) for _ in range(2))
    store.get(a.context_id)  # b is now least recently used
    c = store.add([], 1, 1, 60)
    assert len(store) == 2
    with pytest.raises(ContextNotFound):
        store.get(b.context_id)
    assert store.get(a.context_id) is a and store.get(c.context_id) is c
    store.delete(a.context_id)
    with pytest.raises(ContextNotFound):
        store.delete(a.context_id)
    assert len({a.context_id, b.context_id, c.context_id}) == 3
