"""The KV of the request being prefilled: its matched pages copied into one reusable buffer, each new chunk's
KV appended in place. Reusing the buffer avoids allocating (and page-faulting) the prefix's size per request."""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from engine.kv.store import KVStore


class BufferLayer(DynamicLayer):
    """A transformers cache layer whose keys and values are views of a preallocated buffer."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int) -> None:
        super().__init__()
        self.buffer_keys, self.buffer_values, self.length = keys, values, length
        self.lazy_initialization(keys, values)
        self.keys, self.values = keys[:, :, :length], values[:, :, :length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + key_states.shape[-2]
        self.buffer_keys[:, :, self.length : end].copy_(key_states)
        self.buffer_values[:, :, self.length : end].copy_(value_states)
        self.length = end
        self.keys, self.values = self.buffer_keys[:, :, :end], self.buffer_values[:, :, :end]
        return self.keys, self.values


class PrefillBuffer:
    """One buffer of [layers, kv_heads, tokens, head_dim] keys and values, grown to the longest prompt seen.
    Only one request is prefilled at a time (the scheduler's rule), so one buffer serves them all."""

    def __init__(self, store: KVStore) -> None:
        self.store = store
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def cache(self, page_ids: list[int], prompt_tokens: int) -> DynamicCache:
        """A cache holding the pages' KV, with room for the rest of a prompt of `prompt_tokens` tokens."""
        self._reserve(prompt_tokens)
        P = self.store.page_size
        for i, page_id in enumerate(page_ids):
            keys, values = self.store.read_page(page_id)
            self.k[:, :, i * P : (i + 1) * P].copy_(keys)
            self.v[:, :, i * P : (i + 1) * P].copy_(values)
        cache = DynamicCache()
        for k, v in zip(self.k, self.v):
            cache.layers.append(BufferLayer(k.unsqueeze(0), v.unsqueeze(0), len(page_ids) * P))
        return cache

    def _reserve(self, tokens: int) -> None:
        if self.k is not None and self.k.shape[2] >= tokens:
            return
        store = self.store
        size = -(-tokens // store.page_size) * store.page_size
        shape = (store.num_layers, store.kv_heads, size, store.head_dim)
        self.k = self.v = None  # free the smaller buffer first
        self.k = torch.empty(shape, dtype=store.dtype, device=store.device)
        self.v = torch.empty(shape, dtype=store.dtype, device=store.device)
