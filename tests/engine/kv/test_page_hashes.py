"""A request's page hash chain is computed once, on its sequence: every full page of its prompt and output is
hashed exactly once, whichever tiers the match, the publish and the disk write-through go through."""

import torch

from engine import Engine, Request
from engine.kv import block_manager

P = 4


def count_page_hashes(monkeypatch) -> list[tuple[int, tuple[int, ...]]]:
    """Every call of the chain hash from now on, as (parent, page token ids)."""
    calls: list[tuple[int, tuple[int, ...]]] = []
    real = block_manager.page_hash

    def counted(parent: int, token_ids: list[int] | tuple[int, ...]) -> int:
        calls.append((parent, tuple(token_ids)))
        return real(parent, token_ids)

    monkeypatch.setattr(block_manager, "page_hash", counted)
    return calls


def no_eos(tiny) -> torch.Tensor:
    allowed = torch.ones(tiny.config.vocab_size, dtype=torch.bool)
    allowed[list(tiny.eos_token_ids)] = False  # decode to the limit, so generated tokens fill pages too
    return allowed


def full_pages(prompt: list[int], out: list[int]) -> int:
    """Pages whose KV is in the pool when the request ends: the last generated token's KV is never computed."""
    return (len(prompt) + len(out) - 1) // P


def test_each_page_of_a_request_is_hashed_once(tiny, tmp_path, monkeypatch):
    allowed = no_eos(tiny)
    prompt = list(range(3, 3 + 5 * P + 3))  # five full pages and a partial one

    def request(tokens: list[int]) -> Request:
        return Request([tokens], max_tokens=2 * P, logits_mask=lambda _ids: allowed)

    def engine() -> Engine:  # every tier on: pool, host memory, disk
        return Engine(tiny, page_size=P, capacity_bytes=1 << 20, disk_dir=tmp_path / "kv", host_bytes=1 << 20)

    first = engine()
    calls = count_page_hashes(monkeypatch)
    cold = first.generate(request(prompt))
    assert cold.usage.cached_tokens == 0 and len(cold.token_ids) == 2 * P
    assert len(calls) == full_pages(prompt, cold.token_ids) == 7
    assert len(set(calls)) == len(calls)

    calls.clear()
    longer = prompt + [9] * P
    warm = first.generate(request(longer))  # from the pool
    assert warm.usage.cached_tokens == 5 * P
    assert len(calls) == full_pages(longer, warm.token_ids)

    calls.clear()
    from_disk = engine().generate(request(longer))  # a new engine: the match goes on to the disk tier
    assert from_disk.usage.disk_tokens == 6 * P
    assert len(calls) == full_pages(longer, from_disk.token_ids)
