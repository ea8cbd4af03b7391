"""The host tier, forced on for the CPU: evicted pool pages come back from host memory, exactly, and before disk."""

import random

import torch

from engine import Engine, Request
from engine.kv.host_tier import HostTier
from tests.engine.conftest import reference_logits, rel_err
from tests.engine.kv.disk_helpers import check_page_file, page_paths

P = 16


def random_prompt(rng: random.Random, pages: int) -> list[int]:
    return [rng.randrange(3, 512) for _ in range(pages * P + 1)]


PAGE_BYTES = 2 * 2 * 2 * P * 16 * 4  # layers * (k,v) * kv_heads * page * head_dim * fp32


def test_evicted_pages_return_from_host_with_equal_logits(tiny):
    page_bytes = PAGE_BYTES
    engine = Engine(tiny, page_size=P, capacity_bytes=6 * page_bytes, host_bytes=64 * page_bytes)
    rng = random.Random(0)
    a, b = random_prompt(rng, 4), random_prompt(rng, 4)
    engine.generate(Request([a], max_tokens=1))
    engine.generate(Request([b], max_tokens=1))  # needs 5 pages of 6: evicts a's pages
    again = engine.generate(Request([a], max_tokens=1, return_logits=True))
    assert again.usage.cached_tokens == 4 * P
    device = again.trace.tiers["device"]
    assert again.usage.host_tokens == 4 * P - device > 0
    assert rel_err(again.first_logits, reference_logits(tiny, a)) <= 1e-4


def test_host_budget_keeps_the_most_recent_pages():
    host = HostTier(max_bytes=3 * 1024, page_bytes=1024)
    pages = {h: (torch.full((2, 4), float(h)), torch.full((2, 4), -float(h))) for h in range(5)}
    for h, (k, v) in pages.items():
        host.put(h, (h,), k, v)
    assert host.take(0, (0,)) is None and host.take(1, (1,)) is None
    assert host.take(2, (99,)) is None  # same hash, other tokens: refused
    k, v = host.take(4, (4,))
    assert torch.equal(k, pages[4][0]) and torch.equal(v, pages[4][1])
    assert host.take(4, (4,)) is None  # moved out, not copied


def test_no_host_tier_on_cpu_by_default(tiny):
    assert Engine(tiny, page_size=P, capacity_bytes=1 << 20).scheduler.kv.tiers.host is None


def spy(obj, name: str, tier: str, calls: list[tuple[str, int, bool]]) -> None:
    """Record (tier, page hash, found) for every call of obj.name, in call order."""
    method = getattr(obj, name)

    def recorded(h, *args):
        found = method(h, *args)
        calls.append((tier, h, found is not None))
        return found

    setattr(obj, name, recorded)


def test_a_prefix_from_pool_host_and_disk_tries_host_before_disk(tiny, tmp_path):
    kv = tmp_path / "kv"
    engine = Engine(tiny, page_size=P, capacity_bytes=10 * PAGE_BYTES, host_bytes=2 * PAGE_BYTES, disk_dir=kv)
    assert engine.page_bytes == PAGE_BYTES
    rng = random.Random(1)
    a, b = random_prompt(rng, 6), random_prompt(rng, 6)
    engine.generate(Request([a], max_tokens=1))
    engine.generate(Request([b], max_tokens=1))  # 7 of 10 pages: evicts a's tail into a 2-page host tier
    # where each page of a is before the request, from the tiers' own state and the page files' headers
    kv_cache = engine.scheduler.kv
    device, host = set(kv_cache.blocks.hash_to_page), set(kv_cache.tiers.host.pages)
    on_disk = {tuple(h["token_ids"]): int(h["hash"], 16) for h in map(check_page_file, page_paths(kv))}
    hashes = [on_disk[tuple(a[i * P : (i + 1) * P])] for i in range(6)]  # every page has a file (write-through)
    where = ["device" if h in device else "host" if h in host else "disk" for h in hashes]
    assert where == sorted(where, key=["device", "host", "disk"].index)  # one run per tier, in lookup order
    expected = {tier: where.count(tier) * P for tier in ("device", "host", "disk")}
    assert all(expected.values())
    calls: list[tuple[str, int, bool]] = []
    spy(kv_cache.tiers.host, "take", "host", calls)
    spy(kv_cache.tiers.disk, "load", "disk", calls)
    again = engine.generate(Request([a], max_tokens=1, return_logits=True))
    assert again.usage.cached_tokens == 6 * P
    assert (again.usage.host_tokens, again.usage.disk_tokens) == (expected["host"], expected["disk"])
    assert again.trace.tiers == expected
    # host pages have files too, yet disk is never asked for them; disk is asked only after host said no
    asked = [(tier, hashes.index(h), found) for tier, h, found in calls if h in hashes]
    steps = {"device": [], "host": [("host", True)], "disk": [("host", False), ("disk", True)]}
    assert asked == [(tier, i, found) for i, w in enumerate(where) for tier, found in steps[w]]
    assert rel_err(again.first_logits, reference_logits(tiny, a)) <= 1e-4
