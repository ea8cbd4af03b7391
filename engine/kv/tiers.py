"""Lookup below the device pool: extend a prefix match from the host and disk tiers, promote, write through."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engine.kv.block_manager import BlockManager, Match, Origin
from engine.kv.disk_tier import DiskTier
from engine.kv.host_tier import HostTier
from engine.kv.store import KVStore
from engine.model import LoadedModel

DEFAULT_HOST_BYTES = 4 << 30


@dataclass(slots=True)
class TierHits:
    """Pages one request took from each tier below the device pool, and the disk files it refused."""

    host_tokens: int = 0
    disk_tokens: int = 0
    rejected: list[dict] = field(default_factory=list)

    def by_tier(self, cached: int) -> dict[str, int]:
        return {"device": cached - self.host_tokens - self.disk_tokens, "host": self.host_tokens,
                "disk": self.disk_tokens}


class Tiers:
    """Device pool first, then host memory (evicted pages, CUDA), then disk (every full page, written through).
    Pages change hands through the block manager's public methods only."""

    def __init__(self, blocks: BlockManager, store: KVStore, host: HostTier | None, disk: DiskTier | None) -> None:
        self.blocks, self.store, self.host, self.disk = blocks, store, host, disk

    @classmethod
    def build(cls, model: LoadedModel, blocks: BlockManager, store: KVStore, page_bytes: int,
              disk_dir: Path | None, disk_bytes: int, host_bytes: int | None) -> Tiers:
        """host_bytes None: a host tier only on CUDA; 0: none; >0: that budget on any device."""
        if host_bytes is None:
            host_bytes = DEFAULT_HOST_BYTES if model.device.type == "cuda" else 0
        host = HostTier(host_bytes, page_bytes) if host_bytes > 0 else None
        disk = None
        if disk_dir is not None:
            shape = (model.num_layers, model.kv_heads, blocks.page_size, model.head_dim)
            disk = DiskTier(disk_dir, model.fingerprint, model.name, blocks.page_size, model.dtype, shape, disk_bytes)
        return cls(blocks, store, host, disk)

    def keep_on_host(self, page_id: int, h: int, token_ids: tuple[int, ...]) -> None:
        """Called just before a cached device page is reused: copy it to host memory."""
        if self.host is not None:
            self.host.put(h, token_ids, *self.store.read_page(page_id))

    def extend(self, match: Match, prompt: list[int], hashes: list[int], origin: Origin) -> TierHits:
        """Grow `match` page by page from the device, host or disk tier, loading pages into the pool; `hashes` are
        the prompt's page hashes."""
        hits = TierHits()
        if self.host is None and self.disk is None:
            return hits
        P = self.blocks.page_size
        limit = min((len(prompt) - 1) // P, len(hashes))
        pinned = list(match.page_ids)
        start = len(pinned)
        for page_id in pinned:
            self.blocks.pin(page_id)
        try:
            for i in range(len(match.page_ids), limit):
                chunk = tuple(prompt[i * P : (i + 1) * P])
                page_id = self._promote(hashes[i], chunk, hits, origin if i == 0 else None)
                if page_id is None:
                    break
                pinned.append(page_id)
                match.page_ids.append(page_id)
        finally:
            self.blocks.release(pinned)
        if len(match.page_ids) > start:
            self.blocks.count_hits((len(match.page_ids) - start) * P)
            match.stop_reason = self._stop_reason(len(match.page_ids), limit, hashes)
        return hits

    def _stop_reason(self, matched: int, limit: int, hashes: list[int]) -> str:
        """Why the match across tiers stopped: the page after it was evicted from the pool earlier (and is on
        no other tier), was never there, or the match reached the cap or the prompt's last full page."""
        if matched < limit:
            return "evicted" if self.blocks.was_evicted(hashes[matched]) else "absent"
        return "capped" if limit < len(hashes) else "complete"

    def _promote(self, h: int, chunk: tuple[int, ...], hits: TierHits, first: Origin | None) -> int | None:
        """A pinned pool page holding page h: already on the device, or loaded from host or disk."""
        page_id = self.blocks.lookup(h, chunk)
        if page_id is not None:
            self.blocks.pin(page_id)
            return page_id
        if self.blocks.free_pages() == 0:
            return None
        kv = self.host.take(h, chunk) if self.host is not None else None
        tier = "host"
        if kv is None and self.disk is not None:
            kv, tier = self.disk.load(h, chunk, hits.rejected), "disk"
        if kv is None:
            return None
        page_id = self.blocks.take_fresh()
        self.store.write_page(page_id, *(t.to(self.store.device) for t in kv))
        self.blocks.register(page_id, h, chunk, first)
        if tier == "host":
            hits.host_tokens += len(chunk)
        else:
            hits.disk_tokens += len(chunk)
        return page_id

    def persist(self, page_ids: list[int], hashes: list[int], chunks: list[tuple[int, ...]]) -> None:
        """Write-through: every newly registered full page goes to disk unless a file for it exists."""
        if self.disk is None:
            return
        for page_id, h, chunk in zip(page_ids, hashes, chunks):
            self.disk.save(h, chunk, *self.store.read_page(page_id))

