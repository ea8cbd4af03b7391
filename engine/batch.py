"""Running sequences decoded together. Their KV is gathered from the pool once per membership into one preallocated
buffer with room for every token they may still generate; each step appends the new token's KV to the buffer and to
its page slot in the pool, and attends over the buffer (rows padded to the longest and masked). Where that buffer
would take over a quarter of the pool's size, each step gathers the rows' pages layer by layer instead."""

from __future__ import annotations

import math
from typing import Any

import torch

from engine.decode_step import LeanStep
from engine.kv_store import KVStore
from engine.model import with_cache
from engine.sequence import Sequence

BUFFER_SHARE = 4  # the decode buffer may take up to a quarter of the pool's size


class BufferView:
    """The KV cache argument of one step on the buffer: a layer's new keys and values go in at every row's position;
    the layer attends over the buffer's first `width` positions."""

    def __init__(self, batch: DecodeBatch, lengths: torch.Tensor, width: int) -> None:
        self.batch, self.lengths, self.width = batch, lengths, width

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int, *_: Any,
               **__: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """`keys`/`values` [rows, kv_heads, 1, head_dim]: the buffer's views [rows, kv_heads, width, head_dim]."""
        b = self.batch
        b.k[layer_idx][b.rows, :, self.lengths] = keys[:, :, 0]
        b.v[layer_idx][b.rows, :, self.lengths] = values[:, :, 0]
        return b.k[layer_idx][:, :, : self.width], b.v[layer_idx][:, :, : self.width]

    def buffer(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole buffer, keys and values [layers, rows, kv_heads, capacity, head_dim], for a step that writes and
        reads it itself (engine.decode_step's fused layers): each row's new token at its position."""
        return self.batch.k, self.batch.v


class PoolView:
    """The KV cache argument of one step without a buffer: the new token goes to its page slot, and the layer's
    keys and values are gathered from the rows' pages."""

    def __init__(self, store: KVStore, write_slots: torch.Tensor, read_slots: torch.Tensor) -> None:
        self.store, self.write_slots, self.read_slots = store, write_slots, read_slots

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int, *_: Any,
               **__: Any) -> tuple[torch.Tensor, torch.Tensor]:
        self.store.write_step(layer_idx, self.write_slots, keys, values)
        return self.store.read(layer_idx, self.read_slots)


class DecodeBatch:
    """Built once per membership; one forward per step for all rows."""

    def __init__(self, seqs: list[Sequence], store: KVStore, model: Any, lean: LeanStep | None) -> None:
        """`lean`: the model's lean step (engine.decode_step), or None to decode through transformers' forward."""
        self.seqs, self.store, self.model, self.lean = seqs, store, model, lean
        device = store.k.device
        width = max(len(s.table) for s in seqs)
        tables = [s.table + [s.table[0]] * (width - len(s.table)) for s in seqs]
        self.tables = torch.tensor(tables, dtype=torch.long, device=device)
        self.rows = torch.arange(len(seqs), device=device)
        layers, heads, _, _, dim = store.k.shape
        shape = (layers, len(seqs), heads, max(len(s.prompt) + s.max_tokens for s in seqs), dim)
        self.k = self.v = None
        if math.prod(shape) * BUFFER_SHARE <= store.k.numel():
            self.k = torch.empty(shape, dtype=store.k.dtype, device=device)
            self.v = torch.empty(shape, dtype=store.k.dtype, device=device)
            for row, seq in enumerate(seqs):
                slots = store.slots(seq.table, 0, seq.kv_len)
                self.k[:, row, :, : seq.kv_len] = store.k_slots[:, :, slots]
                self.v[:, row, :, : seq.kv_len] = store.v_slots[:, :, slots]
                # zeros past the KV, not garbage: a masked position still multiplies its value by a zero weight,
                # and 0 x NaN is NaN
                self.k[:, row, :, seq.kv_len:] = 0
                self.v[:, row, :, seq.kv_len:] = 0

    @property
    def buffered(self) -> bool:
        return self.k is not None

    @torch.inference_mode()
    def forward(self) -> torch.Tensor:
        """Feed every row's last sampled token at its own position; next-token logits, one row per sequence."""
        device, page_size = self.tables.device, self.store.page_size
        lengths = torch.tensor([s.kv_len for s in self.seqs], dtype=torch.long, device=device)
        width = max(s.kv_len for s in self.seqs) + 1
        positions = torch.arange(width, device=device)
        read_slots = self.tables[:, positions // page_size] * page_size + positions % page_size
        write_slots = read_slots[self.rows, lengths]
        view = BufferView(self, lengths, width) if self.buffered else PoolView(self.store, write_slots, read_slots)
        ids = torch.tensor([[s.out[-1]] for s in self.seqs], dtype=torch.long, device=device)
        if self.lean is not None:
            uniform = min(s.kv_len for s in self.seqs) + 1 == width  # every row attends to all `width` positions
            logits = self.lean.forward(ids, lengths[:, None], view, None if uniform else self._mask(lengths, positions))
        else:
            out = self.model(input_ids=ids, attention_mask=self._mask(lengths, positions),
                             position_ids=lengths[:, None], **with_cache(self.model, view), use_cache=True,
                             logits_to_keep=1)
            logits = out.logits[:, -1]
        if self.buffered:  # the new tokens' KV of every layer into their page slots, in one copy
            self.store.k_slots[:, :, write_slots] = self.k[:, self.rows, :, lengths].permute(1, 2, 0, 3)
            self.store.v_slots[:, :, write_slots] = self.v[:, self.rows, :, lengths].permute(1, 2, 0, 3)
        return logits

    def _mask(self, lengths: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """[rows, 1, 1, width]: 0 where a row attends, the dtype's minimum past its own position."""
        dtype = self.store.k.dtype
        mask = torch.zeros((len(self.seqs), len(positions)), dtype=dtype, device=lengths.device)
        mask[positions[None, :] > lengths[:, None]] = torch.finfo(dtype).min
        return mask[:, None, None, :]
