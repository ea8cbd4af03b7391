"""The host tier, forced on for the CPU: evicted pool pages come back from host memory, exactly."""

import random

import torch

from engine import Engine, Request
from engine.host_tier import HostTier
from tests.engine.conftest import reference_logits, rel_err

P = 16


def random_prompt(rng: random.Random, pages: int) -> list[int]:
    return [rng.randrange(3, 512) for _ in range(pages * P + 1)]


def test_evicted_pages_return_from_host_with_equal_logits(tiny):
    page_bytes = 2 * 2 * 2 * P * 16 * 4  # layers * (k,v) * kv_heads * page * head_dim * fp32
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
    assert Engine(tiny, page_size=P, capacity_bytes=1 << 20).tiers.host is None
