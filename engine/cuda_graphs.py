"""CUDA graphs for the decode step. On a GPU a 1.5B model's step is a few hundred small kernels, each launched from
Python; at that size the launches can cost more than the kernels (benchmarks.gpu_check measures it). A CUDA graph
records the step's kernels once and replays them with one launch; it needs every tensor the step touches at a fixed
address with a fixed shape.

So a graphed step runs on a bucket: a number of rows (1, 2, 4, ... up to the engine's running limit) and a KV
capacity (at least MIN_CAPACITY, in quarter steps between powers of two: bucket_capacity), with its own KV buffer
[layers, rows, kv_heads, capacity, head_dim], its own input tensors (each row's token and length) and its own
output. A decode batch whose rows and capacity fit a bucket decodes in that bucket's buffer (engine.batch.DecodeBatch
takes it instead of allocating its own); rows past the batch's are padding at length 0. The step attends over the
whole capacity with a mask built from the lengths inside the graph, so one graph serves every step of every batch in
the bucket. The first step of a
bucket runs the step once on a side stream (CUDA's warm-up) and captures it; every later step copies its inputs in
and replays. Buckets are kept least recently used first, within the same share of the pool a decode buffer may take
(engine.batch.BUFFER_SHARE), all graphs on one memory pool.

`mode`: 'capture' (CUDA graphs), or 'static' (the same fixed-shape step run eagerly: on a CPU, where there are no
graphs, it tests the bucketing, padding and masking that the graphs rely on)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch

from engine.batch import BufferView, length_mask
from engine.kv.store import KVStore

MIN_CAPACITY = 256


def bucket_rows(n: int) -> int:
    """The smallest power of two that is at least `n`."""
    size = 1
    while size < n:
        size *= 2
    return size


def bucket_capacity(n: int) -> int:
    """The smallest of MIN_CAPACITY and the quarter steps between powers of two above it (256, 320, 384, 448, 512,
    640, ...) that is at least `n`: the step attends over the whole capacity, so a bucket wastes at most a quarter
    of it."""
    if n <= MIN_CAPACITY:
        return MIN_CAPACITY
    step = 1 << max(n - 1, 1).bit_length() - 3  # a quarter of the power of two below n
    return -(-n // step) * step


class Bucket:
    """One bucket's fixed tensors: the KV buffer the batch decodes in, each row's token and KV length, the step's
    logits, and its graph once captured."""

    def __init__(self, store: KVStore, rows: int, capacity: int) -> None:
        shape = (store.num_layers, rows, store.kv_heads, capacity, store.head_dim)
        device = store.device
        self.rows_count, self.capacity = rows, capacity
        self.k = torch.zeros(shape, dtype=store.dtype, device=device)
        self.v = torch.zeros(shape, dtype=store.dtype, device=device)
        self.rows = torch.arange(rows, device=device)
        self.positions = torch.arange(capacity, device=device)
        self.ids = torch.zeros((rows, 1), dtype=torch.long, device=device)
        self.lengths = torch.zeros(rows, dtype=torch.long, device=device)
        self.out: torch.Tensor | None = None
        self.graph: Any = None

    @property
    def slots(self) -> int:
        return self.rows_count * self.capacity

    def step(self, lean: Any) -> torch.Tensor:
        """The step on this bucket's tensors, every shape fixed: each row's token at its length, attending over the
        whole capacity with every position past its own masked."""
        return lean.forward(self.ids, self.lengths[:, None], BufferView(self, self.lengths, self.capacity),
                            length_mask(self.lengths, self.positions, self.k.dtype))


class DecodeGraphs:
    """The buckets of one model runner and their graphs."""

    def __init__(self, lean: Any, store: KVStore, budget_slots: int, mode: str = "capture") -> None:
        """`budget_slots`: the KV token slots (rows x capacity) all buckets' buffers may hold together. `mode`:
        'capture' or 'static' (ModelRunner checks what users ask for)."""
        self.lean, self.store, self.budget, self.mode = lean, store, budget_slots, mode
        self.buckets: OrderedDict[tuple[int, int], Bucket] = OrderedDict()
        self.pool = torch.cuda.graph_pool_handle() if mode == "capture" else None
        self.captures = 0

    def bucket_for(self, rows: int, capacity: int) -> Bucket | None:
        """The bucket a batch of `rows` rows and KV `capacity` decodes in (made where there is none: older buckets
        go first while they would not fit the budget together), or None where even it alone would not fit."""
        key = (bucket_rows(rows), bucket_capacity(capacity))
        if key in self.buckets:
            self.buckets.move_to_end(key)
            return self.buckets[key]
        if key[0] * key[1] > self.budget:
            return None
        while self.buckets and sum(b.slots for b in self.buckets.values()) + key[0] * key[1] > self.budget:
            self.buckets.popitem(last=False)
        self.buckets[key] = made = Bucket(self.store, *key)
        return made

    def step(self, chosen: Bucket, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """One decode step of the batch in bucket `chosen`: its rows' tokens `ids` [rows, 1] at `lengths` [rows]
        (padding rows at length 0). Next-token logits of the batch's rows [rows, vocab], a copy (the bucket's output
        is overwritten by its next step)."""
        rows = ids.shape[0]
        chosen.ids.zero_()
        chosen.ids[:rows].copy_(ids)
        chosen.lengths.zero_()
        chosen.lengths[:rows].copy_(lengths)
        if self.mode == "static":
            return chosen.step(self.lean)[:rows].clone()
        if chosen.graph is None:
            self._capture(chosen)
        chosen.graph.replay()
        return chosen.out[:rows].clone()

    def _capture(self, chosen: Bucket) -> None:
        """Warm the step up on a side stream (CUDA's rule before a capture), then record it. Both write the same
        KV at the same positions as the replay after them, so running them changes nothing."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            chosen.step(self.lean)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            chosen.out = chosen.step(self.lean)
        chosen.graph = graph
        self.captures += 1
