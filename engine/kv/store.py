"""Preallocated KV page storage: one key and one value tensor of [layers, kv_heads, pages, page_size, head_dim]. Every
read and write of those tensors goes through this class's methods."""

from __future__ import annotations

import torch

Layers = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (keys, values), [1, kv_heads, tokens, head_dim]


class KVStore:
    def __init__(self, num_layers: int, kv_heads: int, head_dim: int, page_size: int, num_pages: int,
                 dtype: torch.dtype, device: torch.device) -> None:
        shape = (num_layers, kv_heads, num_pages, page_size, head_dim)
        self._k = torch.zeros(shape, dtype=dtype, device=device)
        self._v = torch.zeros(shape, dtype=dtype, device=device)
        self.num_layers, self.kv_heads, self.head_dim = num_layers, kv_heads, head_dim
        self.page_size, self.num_pages = page_size, num_pages
        self.dtype, self.device = dtype, device
        flat = (num_layers, kv_heads, num_pages * page_size, head_dim)  # token slot = page * page_size + offset
        self._k_slots, self._v_slots = self._k.view(flat), self._v.view(flat)

    @staticmethod
    def page_bytes(num_layers: int, kv_heads: int, head_dim: int, page_size: int, dtype: torch.dtype) -> int:
        return num_layers * 2 * kv_heads * page_size * head_dim * torch.empty((), dtype=dtype).element_size()

    @property
    def num_slots(self) -> int:
        """Token slots in the pool: pages x page size."""
        return self.num_pages * self.page_size

    def slots(self, table: list[int], start: int, end: int) -> torch.Tensor:
        """Token slots of positions [start, end) of a sequence whose pages are `table`."""
        positions = torch.arange(start, end, device=self.device)
        pages = torch.tensor(table, dtype=torch.long, device=self.device)[positions // self.page_size]
        return pages * self.page_size + positions % self.page_size

    def write(self, table: list[int], layers: Layers, start: int, end: int) -> None:
        """Copy the KV of positions [start, end) from contiguous `layers` into the sequence's pages."""
        if end <= start:
            return
        slots = self.slots(table, start, end)
        for layer, (keys, values) in enumerate(layers):
            self._k_slots[layer][:, slots] = keys[0, :, start:end]
            self._v_slots[layer][:, slots] = values[0, :, start:end]

    def write_step(self, layer: int, slots: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> None:
        """One new token per row: `keys`/`values` [rows, kv_heads, 1, head_dim] into `slots` [rows]."""
        self._k_slots[layer][:, slots] = keys[:, :, 0].transpose(0, 1)
        self._v_slots[layer][:, slots] = values[:, :, 0].transpose(0, 1)

    def read(self, layer: int, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values at `slots` [rows, width], shaped [rows, kv_heads, width, head_dim]."""
        flat, shape = slots.reshape(-1), (self.kv_heads, *slots.shape, self.head_dim)
        keys = self._k_slots[layer].index_select(1, flat).view(shape)
        values = self._v_slots[layer].index_select(1, flat).view(shape)
        return keys.transpose(0, 1), values.transpose(0, 1)

    def gather(self, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every layer's keys and values at `slots` [n], shaped [layers, kv_heads, n, head_dim]."""
        return self._k_slots[:, :, slots], self._v_slots[:, :, slots]

    def scatter(self, slots: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Every layer's keys and values [layers, kv_heads, n, head_dim] into `slots` [n]."""
        self._k_slots[:, :, slots] = keys
        self._v_slots[:, :, slots] = values

    def read_page(self, page_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Views of one page's key and value, shaped [layers, kv_heads, page_size, head_dim]."""
        return self._k[:, :, page_id], self._v[:, :, page_id]

    def write_page(self, page_id: int, k: torch.Tensor, v: torch.Tensor) -> None:
        self._k[:, :, page_id].copy_(k)
        self._v[:, :, page_id].copy_(v)
