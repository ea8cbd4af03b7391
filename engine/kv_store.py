"""Preallocated KV page storage: one key and one value tensor of [layers, kv_heads, pages, page_size, head_dim]."""

from __future__ import annotations

import torch


class KVStore:
    def __init__(self, num_layers: int, kv_heads: int, head_dim: int, page_size: int, num_pages: int,
                 dtype: torch.dtype, device: torch.device) -> None:
        shape = (num_layers, kv_heads, num_pages, page_size, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.page_size = page_size

    @staticmethod
    def page_bytes(num_layers: int, kv_heads: int, head_dim: int, page_size: int, dtype: torch.dtype) -> int:
        return num_layers * 2 * kv_heads * page_size * head_dim * torch.empty((), dtype=dtype).element_size()

    def gather(self, page_ids: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Contiguous (key, value) per layer, shaped [1, kv_heads, len(page_ids) * page_size, head_dim]."""
        ids = torch.tensor(page_ids, dtype=torch.long, device=self.k.device)
        layers = []
        for k, v in zip(self.k, self.v):
            heads, _, _, dim = k.shape
            layers.append((k[:, ids].reshape(1, heads, -1, dim), v[:, ids].reshape(1, heads, -1, dim)))
        return layers

    def write(self, page_ids: list[int], layers: list[tuple[torch.Tensor, torch.Tensor]], start: int) -> None:
        """Copy full pages of computed KV, starting at page-aligned token `start`, into `page_ids`."""
        if not page_ids:
            return
        ids = torch.tensor(page_ids, dtype=torch.long, device=self.k.device)
        end = start + len(page_ids) * self.page_size
        for layer, (keys, values) in enumerate(layers):
            heads, dim = keys.shape[1], keys.shape[3]
            shape = (heads, len(page_ids), self.page_size, dim)
            self.k[layer][:, ids] = keys[0, :, start:end].reshape(shape)
            self.v[layer][:, ids] = values[0, :, start:end].reshape(shape)
