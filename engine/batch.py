"""Running sequences decoded together. Their KV is gathered from the pool once per membership into one preallocated
buffer with room for every token they may still generate; each step appends the new token's KV to the buffer and to
its page slot in the pool, and attends over the buffer (rows padded to the longest and masked). Where that buffer
would take over a quarter of the pool's size, each step gathers the rows' pages layer by layer instead. The step
itself (the forward) is the model runner's."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from engine.kv.store import KVStore
from engine.sequence import Sequence

if TYPE_CHECKING:
    from engine.cuda_graphs import DecodeGraphs

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


class DraftView:
    """The KV cache argument of a verification forward (engine.speculate): one sequence's tokens at positions
    `start`, `start` + 1, ..., each a row of the step; their keys and values go into the sequence's buffer row, and
    every row reads that one row (stride 0), attending up to its own position."""

    def __init__(self, batch: DecodeBatch, start: int, count: int) -> None:
        self.batch, self.start, self.end = batch, start, start + count

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int, *_: Any,
               **__: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """`keys`/`values` [count, kv_heads, 1, head_dim]: the buffer row's views [count, kv_heads, end, head_dim]."""
        b, rows = self.batch, keys.shape[0]
        b.k[layer_idx][0, :, self.start : self.end] = keys[:, :, 0].transpose(0, 1)
        b.v[layer_idx][0, :, self.start : self.end] = values[:, :, 0].transpose(0, 1)
        return (b.k[layer_idx][:1, :, : self.end].expand(rows, -1, -1, -1),
                b.v[layer_idx][:1, :, : self.end].expand(rows, -1, -1, -1))


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
    """Built once per membership: the rows' page tables and, where it fits, their KV buffer. The model runner runs its
    steps (ModelRunner.decode)."""

    def __init__(self, seqs: list[Sequence], store: KVStore, graphs: DecodeGraphs | None = None) -> None:
        """`graphs`: where the batch fits one of their buckets, it decodes in that bucket's buffer (`bucket`) and its
        steps replay the bucket's graph (engine.cuda_graphs); otherwise it has a buffer of its own, or none."""
        self.seqs, self.store = seqs, store
        device = store.device
        width = max(len(s.table) for s in seqs)
        tables = [s.table + [s.table[0]] * (width - len(s.table)) for s in seqs]
        self.tables = torch.tensor(tables, dtype=torch.long, device=device)
        self.rows = torch.arange(len(seqs), device=device)
        capacity = max(len(s.prompt) + s.max_tokens for s in seqs)
        shape = (store.num_layers, len(seqs), store.kv_heads, capacity, store.head_dim)
        self.k = self.v = None
        self.bucket = graphs.bucket_for(len(seqs), capacity) if graphs is not None else None
        if self.bucket is not None:
            self.k, self.v = self.bucket.k, self.bucket.v
        elif len(seqs) * capacity * BUFFER_SHARE <= store.num_slots:
            self.k = torch.empty(shape, dtype=store.dtype, device=device)
            self.v = torch.empty(shape, dtype=store.dtype, device=device)
        if self.k is not None:
            for row, seq in enumerate(seqs):
                keys, values = store.gather(store.slots(seq.table, 0, seq.kv_len))
                self.k[:, row, :, : seq.kv_len] = keys
                self.v[:, row, :, : seq.kv_len] = values
                # zeros past the KV, not garbage: a masked position still multiplies its value by a zero weight,
                # and 0 x NaN is NaN
                self.k[:, row, :, seq.kv_len:] = 0
                self.v[:, row, :, seq.kv_len:] = 0

    @property
    def buffered(self) -> bool:
        return self.k is not None

    def step(self) -> tuple[torch.Tensor, torch.Tensor, BufferView | PoolView | None, torch.Tensor | None]:
        """A step's inputs: each row's last sampled token [rows, 1], its position [rows, 1] (the row's KV length),
        the KV view the layers write and read, and the mask [rows, 1, 1, width] (neither for a batch in a graph
        bucket). `uniform` is then whether every row attends to all `width` positions (the mask masks nothing)."""
        device, page_size = self.tables.device, self.store.page_size
        lengths = torch.tensor([s.kv_len for s in self.seqs], dtype=torch.long, device=device)
        ids = torch.tensor([[s.out[-1]] for s in self.seqs], dtype=torch.long, device=device)
        if self.bucket is not None:  # its graph builds the view and the mask itself (engine.cuda_graphs)
            self.lengths = lengths
            self.write_slots = self.tables[self.rows, lengths // page_size] * page_size + lengths % page_size
            return ids, lengths[:, None], None, None
        width = max(s.kv_len for s in self.seqs) + 1
        positions = torch.arange(width, device=device)
        read_slots = self.tables[:, positions // page_size] * page_size + positions % page_size
        self.write_slots, self.lengths = read_slots[self.rows, lengths], lengths
        view = BufferView(self, lengths, width) if self.buffered else PoolView(self.store, self.write_slots, read_slots)
        self.uniform = min(s.kv_len for s in self.seqs) + 1 == width
        return ids, lengths[:, None], view, self.mask(lengths, positions)

    def draft_step(self, tokens: list[int]) -> tuple[torch.Tensor, torch.Tensor, DraftView, torch.Tensor]:
        """A verification forward's inputs for the batch's one sequence on its buffer: its last sampled token and
        the drafted `tokens`, one a row [count, 1], at their positions [count, 1], their KV view, and the mask
        [count, 1, 1, width] (each row attends up to its own position)."""
        (seq,) = self.seqs
        device, start = self.tables.device, seq.kv_len
        ids = torch.tensor([[seq.out[-1]], *([t] for t in tokens)], dtype=torch.long, device=device)
        lengths = torch.arange(start, start + len(ids), device=device)
        self.draft_start = start
        view = DraftView(self, start, len(ids))
        return ids, lengths[:, None], view, self.mask(lengths, torch.arange(start + len(ids), device=device))

    def commit_drafted(self, kept: int) -> None:
        """After a verification forward: the KV of the last sampled token and the `kept` drafted tokens after it
        into their page slots (the rejected drafts' KV stays in the buffer, past the sequence's length, where the
        next steps overwrite it)."""
        (seq,) = self.seqs
        start, end = self.draft_start, self.draft_start + kept + 1
        self.store.scatter(self.store.slots(seq.table, start, end), self.k[:, 0, :, start:end],
                           self.v[:, 0, :, start:end])

    def commit(self) -> None:
        """After a step on the buffer: the new tokens' KV of every layer into their page slots, in one copy."""
        if self.buffered:
            rows, lengths = self.rows, self.lengths
            self.store.scatter(self.write_slots, self.k[:, rows, :, lengths].permute(1, 2, 0, 3),
                               self.v[:, rows, :, lengths].permute(1, 2, 0, 3))

    def mask(self, lengths: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return length_mask(lengths, positions, self.store.dtype)


def length_mask(lengths: torch.Tensor, positions: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[rows, 1, 1, width], a row per length: 0 where a row attends, the dtype's minimum past its own position. No
    host sync (a CUDA graph records it: engine.cuda_graphs)."""
    mask = torch.zeros((len(lengths), len(positions)), dtype=dtype, device=lengths.device)
    return mask.masked_fill(positions[None, :] > lengths[:, None], torch.finfo(dtype).min)[:, None, None, :]
