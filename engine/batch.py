"""Running sequences decoded together straight from the KV pool: each step writes every row's new KV into
its page slot and attends over the rows' pages, padded to the longest row and masked."""

from __future__ import annotations

from typing import Any

import torch

from engine.kv_store import KVStore
from engine.model import with_cache
from engine.sequence import Sequence


class PoolView:
    """The KV cache argument of one decode step: the model's per-layer cache update, served by the pool."""

    def __init__(self, store: KVStore, write_slots: torch.Tensor, read_slots: torch.Tensor) -> None:
        self.store, self.write_slots, self.read_slots = store, write_slots, read_slots

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int, *_: Any,
               **__: Any) -> tuple[torch.Tensor, ...]:
        self.store.write_step(layer_idx, self.write_slots, keys, values)
        return self.store.read(layer_idx, self.read_slots)


class DecodeBatch:
    """Built once per membership (the rows' page tables, padded); one forward per step for all rows."""

    def __init__(self, seqs: list[Sequence], store: KVStore) -> None:
        self.seqs, self.store = seqs, store
        width = max(len(s.table) for s in seqs)
        rows = [s.table + [s.table[0]] * (width - len(s.table)) for s in seqs]
        self.tables = torch.tensor(rows, dtype=torch.long, device=store.k.device)

    @torch.inference_mode()
    def forward(self, model: Any) -> torch.Tensor:
        """Feed every row's last sampled token at its own position; next-token logits, one row per sequence."""
        device, page_size = self.tables.device, self.store.page_size
        lengths = torch.tensor([s.kv_len for s in self.seqs], dtype=torch.long, device=device)
        positions = torch.arange(int(lengths.max()) + 1, device=device)
        read_slots = self.tables[:, positions // page_size] * page_size + positions % page_size
        write_slots = read_slots[torch.arange(len(self.seqs), device=device), lengths]
        dtype = self.store.k.dtype
        mask = torch.zeros(read_slots.shape, dtype=dtype, device=device)
        mask[positions[None, :] > lengths[:, None]] = torch.finfo(dtype).min
        ids = torch.tensor([[s.out[-1]] for s in self.seqs], dtype=torch.long, device=device)
        pool = PoolView(self.store, write_slots, read_slots)
        out = model(input_ids=ids, attention_mask=mask[:, None, None, :], position_ids=lengths[:, None],
                    **with_cache(model, pool), use_cache=True, logits_to_keep=1)
        return out.logits[:, -1]
