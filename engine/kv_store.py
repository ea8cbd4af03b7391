"""Preallocated KV page storage: one key and one value tensor of [layers, kv_heads, pages, page_size, head_dim]."""

from __future__ import annotations

import torch

Layers = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (keys, values), [1, kv_heads, tokens, head_dim]


class KVStore:
    def __init__(self, num_layers: int, kv_heads: int, head_dim: int, page_size: int, num_pages: int,
                 dtype: torch.dtype, device: torch.device) -> None:
        shape = (num_layers, kv_heads, num_pages, page_size, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.page_size = page_size
        flat = (num_layers, kv_heads, num_pages * page_size, head_dim)  # token slot = page * page_size + offset
        self.k_slots, self.v_slots = self.k.view(flat), self.v.view(flat)

    @staticmethod
    def page_bytes(num_layers: int, kv_heads: int, head_dim: int, page_size: int, dtype: torch.dtype) -> int:
        return num_layers * 2 * kv_heads * page_size * head_dim * torch.empty((), dtype=dtype).element_size()

    def slots(self, table: list[int], start: int, end: int) -> torch.Tensor:
        """Token slots of positions [start, end) of a sequence whose pages are `table`."""
        positions = torch.arange(start, end, device=self.k.device)
        pages = torch.tensor(table, dtype=torch.long, device=self.k.device)[positions // self.page_size]
        return pages * self.page_size + positions % self.page_size

    def write(self, table: list[int], layers: Layers, start: int, end: int) -> None:
        """Copy the KV of positions [start, end) from contiguous `layers` into the sequence's pages."""
        if end <= start:
            return
        slots = self.slots(table, start, end)
        for layer, (keys, values) in enumerate(layers):
            self.k_slots[layer][:, slots] = keys[0, :, start:end]
            self.v_slots[layer][:, slots] = values[0, :, start:end]

    def write_step(self, layer: int, slots: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> None:
        """One new token per row: `keys`/`values` [rows, kv_heads, 1, head_dim] into `slots` [rows]."""
        self.k_slots[layer][:, slots] = keys[:, :, 0].transpose(0, 1)
        self.v_slots[layer][:, slots] = values[:, :, 0].transpose(0, 1)

    def read(self, layer: int, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values at `slots` [rows, width], shaped [rows, kv_heads, width, head_dim]."""
        heads, dim = self.k_slots.shape[1], self.k_slots.shape[3]
        flat, shape = slots.reshape(-1), (heads, *slots.shape, dim)
        keys = self.k_slots[layer].index_select(1, flat).view(shape)
        values = self.v_slots[layer].index_select(1, flat).view(shape)
        return keys.transpose(0, 1), values.transpose(0, 1)

    def read_page(self, page_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Views of one page's key and value, shaped [layers, kv_heads, page_size, head_dim]."""
        return self.k[:, :, page_id], self.v[:, :, page_id]

    def write_page(self, page_id: int, k: torch.Tensor, v: torch.Tensor) -> None:
        self.k[:, :, page_id].copy_(k)
        self.v[:, :, page_id].copy_(v)
