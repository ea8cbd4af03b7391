"""The KV cache manager, one owner for the pool: page bookkeeping (BlockManager), page tensors (KVStore) and the
tiers below them (host, disk). It matches a sequence's prompt, allocates its pages, publishes the full ones and
releases them, always with the page hashes the sequence was created with."""

from __future__ import annotations

from bisect import bisect_right
from itertools import accumulate
from pathlib import Path

from engine.kv.block_manager import RETENTION, BlockManager, Origin, chain_hashes
from engine.errors import EngineError
from engine.kv.store import KVStore
from engine.model import LoadedModel
from engine.request import Trace, Usage
from engine.sequence import Sequence
from engine.kv.tiers import Tiers


class KVCacheManager:
    def __init__(self, model: LoadedModel, page_size: int, capacity_bytes: int, disk_dir: Path | None,
                 disk_bytes: int, host_bytes: int | None) -> None:
        self.fingerprint = model.fingerprint
        self.page_size = page_size
        self.page_bytes = KVStore.page_bytes(model.num_layers, model.kv_heads, model.head_dim, page_size, model.dtype)
        num_pages = capacity_bytes // self.page_bytes
        if num_pages < 1:
            raise EngineError(f"KV capacity {capacity_bytes} bytes holds no page of {self.page_bytes} bytes")
        self.blocks = BlockManager(num_pages, page_size)
        self.store = KVStore(model.num_layers, model.kv_heads, model.head_dim, page_size, num_pages,
                             model.dtype, model.device)
        # pages evicted from the pool go to the host tier; full pages are written through to disk
        self.tiers = Tiers.build(model, self.blocks, self.store, self.page_bytes, disk_dir, disk_bytes, host_bytes)
        self.blocks.on_evict = self.tiers.keep_on_host if self.tiers.host is not None else None

    def fits_now(self, seq: Sequence) -> bool:
        """Enough free pages for the whole request even if none of its prefix were cached (no counters touched)."""
        return self.blocks.pages_needed(len(seq.prompt) + seq.max_tokens) <= self.blocks.free_pages()

    def admit(self, seq: Sequence) -> list[int]:
        """Match the prompt across the tiers, then allocate: the sequence gets its page table, usage and trace.
        Returns the cached pages (the table's head). Raises EngineCapacityError (nothing allocated) if it cannot fit."""
        prompt, origin = seq.prompt, self._origin(seq)
        match = self.blocks.match(prompt, seq.page_hashes, origin)
        hits = self.tiers.extend(match, prompt, seq.page_hashes, origin)
        seq.table = self.blocks.allocate(match.page_ids, len(prompt) + seq.max_tokens)
        cached = len(match.page_ids) * self.page_size
        seq.usage = Usage(len(prompt), cached, len(prompt) - cached, 0, hits.host_tokens, hits.disk_tokens)
        seq.trace = Trace(self.page_size, len(match.page_ids), match.stop_reason,
                          tiers=hits.by_tier(cached), disk_rejected=hits.rejected)
        return match.page_ids

    def publish_prompt(self, seq: Sequence) -> None:
        """Index the prompt's full pages that prefill computed (their KV is in the pool) and write them through."""
        self._publish(seq, seq.usage.cached_tokens, len(seq.prompt))

    def release(self, seq: Sequence) -> None:
        """Publish the full pages the generated tokens filled, then unpin the sequence's pages."""
        if seq.table and seq.out:
            self._publish(seq, (len(seq.prompt) // self.page_size) * self.page_size, seq.kv_len)
        self.blocks.release(seq.table, self._page_retention(seq))
        seq.table = []

    def _page_retention(self, seq: Sequence) -> list[int] | None:
        """Each page's retention class: its last token's segment's (generated tokens: the last segment's)."""
        classes = seq.request.retention
        if classes is None:
            return None
        ends = list(accumulate(seq.segment_tokens))
        last = len(ends) - 1
        return [RETENTION.index(classes[min(bisect_right(ends, (page + 1) * self.page_size - 1), last)])
                for page in range(len(seq.table))]

    def stats(self) -> dict[str, int]:
        return self.blocks.stats()

    def _origin(self, seq: Sequence) -> Origin:
        return self.fingerprint, seq.root

    def _publish(self, seq: Sequence, start: int, end: int) -> None:
        """Index every full page of the sequence's tokens[:end] from page-aligned `start` on."""
        P = self.page_size
        first, have = start // P, end // P
        if have <= first:
            return
        tokens = seq.prompt + seq.out
        hashes = self._page_hashes(seq, tokens, have)
        chunks = [tuple(tokens[i * P : (i + 1) * P]) for i in range(first, have)]
        for i, chunk in zip(range(first, have), chunks):
            self.blocks.register(seq.table[i], hashes[i], chunk, self._origin(seq) if i == 0 else None)
        self.tiers.persist(seq.table[first:have], hashes[first:have], chunks)

    def _page_hashes(self, seq: Sequence, tokens: list[int], pages: int) -> list[int]:
        """The hashes of the first `pages` full pages of `tokens`: the prompt's came with the sequence; a page that
        generated tokens filled is hashed here, once, and kept on the sequence too."""
        known = len(seq.page_hashes)
        if pages > known:
            parent = seq.page_hashes[-1] if known else seq.root
            seq.page_hashes += chain_hashes(tokens[known * self.page_size : pages * self.page_size],
                                            self.page_size, parent)
        return seq.page_hashes
