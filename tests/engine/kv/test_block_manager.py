"""Page bookkeeping without tensors: hashing, verification, refcounts, LRU eviction, counters."""

import pytest

from engine.kv.block_manager import BlockManager, Match, chain_hashes, page_hash, root_hash
from engine.errors import EngineCapacityError

P = 4
FP = "fp"


def hashes_of(tokens: list[int], salt: str | None = None, fp: str = FP) -> list[int]:
    return chain_hashes(tokens, P, root_hash(fp, salt))


def match(bm: BlockManager, tokens: list[int], salt: str | None = None, fp: str = FP) -> Match:
    """Match as the engine does, with the prompt's page hashes computed beforehand."""
    return bm.match(tokens, hashes_of(tokens, salt, fp), (fp, root_hash(fp, salt)))


def fill(bm: BlockManager, tokens: list[int], salt: str | None = None) -> list[int]:
    """Allocate pages for `tokens`, index every full page as the runner does, and release them."""
    table = bm.allocate(match(bm, tokens, salt).page_ids, len(tokens))
    for i, h in enumerate(hashes_of(tokens, salt)):
        origin = (FP, root_hash(FP, salt)) if i == 0 else None
        bm.register(table[i], h, tuple(tokens[i * P : (i + 1) * P]), origin)
    bm.release(table)
    return table


def test_chain_hash_depends_on_parent_and_tokens():
    assert page_hash(1, [1, 2, 3, 4]) != page_hash(2, [1, 2, 3, 4])
    assert page_hash(1, [1, 2, 3, 4]) != page_hash(1, [1, 2, 3, 5])
    a = chain_hashes([1, 2, 3, 4, 5, 6, 7, 8], P, 7)
    b = chain_hashes([9, 9, 9, 9, 5, 6, 7, 8], P, 7)
    assert a[1] != b[1]  # same second page, different history


def test_only_full_pages_are_hashed():
    assert len(chain_hashes(list(range(11)), P, 0)) == 2


def test_hit_is_capped_below_prompt_length():
    bm = BlockManager(8, P)
    tokens = list(range(8))
    fill(bm, tokens)
    hit = match(bm, tokens)
    assert len(hit.page_ids) == 1 and hit.stop_reason == "capped"
    longer = match(bm, tokens + [99])
    assert len(longer.page_ids) == 2 and longer.stop_reason == "complete"


def test_salt_separates_and_is_reported():
    bm = BlockManager(8, P)
    fill(bm, list(range(9)), salt="a")
    assert len(match(bm, list(range(9)), "a").page_ids) == 2
    other = match(bm, list(range(9)), "b")
    assert other.page_ids == [] and other.stop_reason == "salt"


def test_other_model_is_reported():
    bm = BlockManager(8, P)
    fill(bm, list(range(9)))
    miss = match(bm, list(range(9)), fp="other-fp")
    assert miss.page_ids == [] and miss.stop_reason == "model"


def test_collision_is_verified_against_token_ids():
    bm = BlockManager(8, P)
    tokens = list(range(9))
    fill(bm, tokens)
    first = bm.hash_to_page[hashes_of(tokens)[0]]
    bm.pages[first].token_ids = (7, 7, 7, 7)  # stored ids no longer match the hash
    miss = match(bm, tokens)
    assert miss.page_ids == [] and miss.stop_reason == "collision"


def test_eviction_is_lazy_lru_and_tails_first():
    bm = BlockManager(4, P)
    fill(bm, list(range(8)))  # two cached pages
    assert bm.stats()["pages_cached"] == 2
    assert len(match(bm, list(range(9))).page_ids) == 2  # still indexed though free
    fill(bm, [50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61])  # needs 3 pages: 2 free + 1 eviction
    assert bm.counters.evictions == 1
    survivor = match(bm, list(range(9)))
    assert len(survivor.page_ids) == 1 and survivor.stop_reason == "evicted"  # the tail went first


def test_capacity_error_leaves_state_unchanged():
    bm = BlockManager(4, P)
    fill(bm, list(range(8)))
    held = bm.allocate([], 8)  # pins 2 pages (evicting the cached ones)
    before = (bm.stats(), list(bm.free), [(p.ref_count, p.hash) for p in bm.pages])
    with pytest.raises(EngineCapacityError, match=r"needs 3 new KV pages .* only 2 of 4"):
        bm.allocate([], 12)
    assert before == (bm.stats(), list(bm.free), [(p.ref_count, p.hash) for p in bm.pages])
    bm.release(held)
    assert bm.stats()["pages_used"] == 0


def test_shared_pages_are_refcounted():
    bm = BlockManager(8, P)
    fill(bm, list(range(9)))
    hit = match(bm, list(range(9)))
    a = bm.allocate(hit.page_ids, 9)
    b = bm.allocate(hit.page_ids, 9)
    assert a[:2] == b[:2] and bm.pages[a[0]].ref_count == 2
    bm.release(a)
    assert bm.pages[a[0]].ref_count == 1 and a[0] not in bm.free
    bm.release(b)
    assert bm.pages[a[0]].ref_count == 0 and a[0] in bm.free
    assert bm.stats()["pages_used"] == 0


def test_first_page_roots_and_eviction_history_go_with_the_pages():
    bm = BlockManager(4, P)
    for i in range(100):  # one salt each: two pages in a pool of four
        fill(bm, list(range(9)), salt=f"s{i}")
    assert sum(len(roots) for roots in bm.first_page_roots.values()) <= 4
    assert len(bm.hash_to_page) <= 4 and len(bm.evicted) <= 4 * 4
    assert match(bm, list(range(9)), "new").stop_reason == "salt"  # the live salts still explain a miss
    fill(bm, list(range(50, 59)))
    fill(bm, list(range(60, 69)))  # the last salted pages are reused
    assert bm.first_page_roots.get(tuple(range(4))) is None
    assert match(bm, list(range(9)), "new").stop_reason == "absent"
