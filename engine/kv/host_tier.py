"""The host tier: device pages evicted from the pool kept in (pinned) host memory, LRU within a byte budget."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch


@dataclass(slots=True)
class HostPage:
    token_ids: tuple[int, ...]
    k: torch.Tensor
    v: torch.Tensor


class HostTier:
    def __init__(self, max_bytes: int, page_bytes: int) -> None:
        self.capacity = max_bytes // page_bytes
        self.pin = torch.cuda.is_available()
        self.pages: OrderedDict[int, HostPage] = OrderedDict()

    def put(self, h: int, token_ids: tuple[int, ...], k: torch.Tensor, v: torch.Tensor) -> None:
        """Keep a copy of page h, dropping the least recently used pages beyond the budget."""
        if self.capacity < 1 or h in self.pages:
            return
        while len(self.pages) >= self.capacity:
            self.pages.popitem(last=False)
        self.pages[h] = HostPage(token_ids, self._copy(k), self._copy(v))

    def take(self, h: int, token_ids: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Remove and return page h if it holds exactly these tokens (it moves back to the device)."""
        page = self.pages.get(h)
        if page is None or page.token_ids != token_ids:
            return None
        del self.pages[h]
        return page.k, page.v

    def _copy(self, t: torch.Tensor) -> torch.Tensor:
        out = torch.empty(t.shape, dtype=t.dtype, device="cpu", pin_memory=self.pin)
        out.copy_(t, non_blocking=False)
        return out
