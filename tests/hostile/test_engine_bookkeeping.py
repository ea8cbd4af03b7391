"""1,000 requests with distinct salts or distinct first pages: every index the engine keeps stays within its pool."""

import random

import pytest

from engine import Engine, Request, load_model
from engine.kv.block_manager import EVICTED_POOLS

P = 16
POOL_PAGES = 8
HOST_PAGES = 4
REQUESTS = 1000


@pytest.fixture(scope="module")
def tiny():
    return load_model("random-tiny")


def small_engine(tiny, kv) -> Engine:
    """Every tier on, each small: an 8-page pool, 4 pages of host memory, a disk folder."""
    page_bytes = Engine(tiny, page_size=P, capacity_bytes=1 << 20).page_bytes
    return Engine(tiny, page_size=P, capacity_bytes=POOL_PAGES * page_bytes, host_bytes=HOST_PAGES * page_bytes,
                  disk_dir=kv)


def requests(variant: str) -> list[Request]:
    """Two full pages and one token each (3 of the 8 pages): a distinct salt on the same tokens, or no salt and a
    distinct first page."""
    rng = random.Random(0)
    shared = [rng.randrange(3, 512) for _ in range(2 * P + 1)]
    if variant == "salt":
        return [Request([shared], max_tokens=1, salt=f"tenant-{i}") for i in range(REQUESTS)]
    return [Request([[3 + i // 500, 3 + i % 500] + shared[2:]], max_tokens=1) for i in range(REQUESTS)]


def assert_bounded(e: Engine) -> None:
    kv = e.scheduler.kv
    bm, n = kv.blocks, kv.blocks.num_pages
    assert len(bm.pages) == n and len(bm.free) <= n
    assert len(bm.hash_to_page) <= n
    assert all(bm.pages[page_id].hash == h for h, page_id in bm.hash_to_page.items())
    origins = {(key, origin) for key, roots in bm.first_page_roots.items() for origin in roots}
    assert sum(len(roots) for roots in bm.first_page_roots.values()) <= n
    assert origins == {(p.token_ids, p.origin) for p in bm.pages if p.origin is not None}
    assert len(bm.evicted) <= EVICTED_POOLS * n
    assert len(kv.tiers.host.pages) <= kv.tiers.host.capacity == HOST_PAGES
    assert not e.scheduler.waiting and not e.scheduler.running and e.scheduler.prefilling is None


@pytest.mark.parametrize("variant", ["salt", "first_page"])
def test_a_thousand_distinct_requests_keep_the_bookkeeping_within_the_pool(tiny, tmp_path, variant):
    e = small_engine(tiny, tmp_path / "kv")
    sent = requests(variant)
    for request in sent:
        e.generate(request)
    assert e.scheduler.kv.blocks.counters.evictions >= REQUESTS  # pages really were reused
    assert_bounded(e)
    last = sent[-1]
    again = e.generate(Request(last.segments, max_tokens=1, salt=last.salt))
    assert again.usage.cached_tokens == 2 * P and again.trace.tiers["device"] == 2 * P  # the live pages still hit
    if variant == "salt":
        other = e.generate(Request(last.segments, max_tokens=1, salt="tenant-new"))
        assert other.trace.stop_reason == "salt" and other.usage.cached_tokens == 0  # and still say why not
    assert_bounded(e)
