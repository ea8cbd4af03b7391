"""The engine: match cached pages, prefill only the uncached suffix on top of them, publish full pages; the
scheduler batches the decode steps of concurrent requests, which read and write the pool directly."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import torch
from transformers import DynamicCache

from engine.block_manager import BlockManager, root_hash
from engine.errors import EngineError
from engine.kv_dir import DEFAULT_DISK_BYTES
from engine.kv_store import KVStore
from engine.workspace import PrefillWorkspace
from engine.model import LoadedModel, with_cache
from engine.request import Request, Result, Trace, Usage
from engine.scheduler import Scheduler
from engine.sequence import OnToken, Sequence
from engine.tiers import Tiers

DEFAULT_CAPACITY = 1 << 30
DEFAULT_MAX_RUNNING = 16
DEFAULT_PREFILL_CHUNK = 256


class Engine:
    def __init__(self, model: LoadedModel, page_size: int = 16, capacity_bytes: int = DEFAULT_CAPACITY,
                 max_running: int = DEFAULT_MAX_RUNNING, disk_dir: Path | None = None,
                 disk_bytes: int = DEFAULT_DISK_BYTES, host_bytes: int | None = None,
                 prefill_chunk: int = DEFAULT_PREFILL_CHUNK) -> None:
        """disk_dir None: no disk tier. host_bytes None: a host tier on CUDA only; 0: none. prefill_chunk: the
        most prompt tokens prefilled between two decode steps of running requests."""
        self.model = model
        self.page_size = page_size
        self.page_bytes = KVStore.page_bytes(model.num_layers, model.kv_heads, model.head_dim, page_size, model.dtype)
        num_pages = capacity_bytes // self.page_bytes
        if num_pages < 1:
            raise EngineError(f"KV capacity {capacity_bytes} bytes holds no page of {self.page_bytes} bytes")
        self.blocks = BlockManager(num_pages, page_size)
        self.store = KVStore(model.num_layers, model.kv_heads, model.head_dim, page_size, num_pages,
                             model.dtype, model.device)
        self.workspace = PrefillWorkspace(self.store)
        # tier hook: pages evicted from the pool go to the host tier; full pages are written through to disk
        self.tiers = Tiers.build(model, self.blocks, self.store, self.page_bytes, disk_dir, disk_bytes, host_bytes)
        self.blocks.on_evict = self.tiers.keep_on_host if self.tiers.host is not None else None
        self.totals = Usage()
        self.requests = 0
        self.scheduler = Scheduler(self, max_running, prefill_chunk)
        self._lock = threading.Lock()

    def tokenize(self, segments: list[str | list[int]]) -> tuple[list[int], list[int]]:
        """Each segment on its own, concatenated: stable bytes give stable tokens across requests."""
        ids: list[int] = []
        counts: list[int] = []
        for segment in segments:
            if isinstance(segment, str):
                if self.model.tokenizer is None:
                    raise EngineError(f"model '{self.model.name}' has no tokenizer: send token ids")
                part = self.model.tokenizer.encode(segment, add_special_tokens=False)
            else:
                part = [int(t) for t in segment]
            ids.extend(part)
            counts.append(len(part))
        return ids, counts

    def generate(self, request: Request, on_token: OnToken | None = None,
                 cancel: threading.Event | None = None) -> Result:
        """Blocking and thread-safe; `on_token` is called as tokens arrive, on the thread of whichever caller
        leads the scheduler. Setting `cancel` stops the request at the next loop turn, frees its pages and
        raises Cancelled."""
        arrived = time.perf_counter()
        prompt, counts = self.tokenize(request.segments)
        self._check_length(prompt, request)
        max_tokens = min(request.max_tokens, self.model.max_len - len(prompt))
        stop_ids = self.model.eos_token_ids | set(request.stop_token_ids)
        seq = Sequence(request, prompt, counts, max_tokens, stop_ids, on_token, arrived, cancel=cancel)
        return self.scheduler.submit(seq)

    def stats(self) -> dict[str, int]:
        with self._lock:
            totals = {f"{k}_total": v for k, v in self.totals.to_dict().items()}
            requests = self.requests
        return {"requests": requests, **totals, **self.blocks.stats(), "page_size": self.page_size,
                "page_bytes": self.page_bytes, "decode_steps": self.scheduler.steps,
                "decode_rows": self.scheduler.rows}

    def _check_length(self, prompt: list[int], request: Request) -> None:
        if not prompt:
            raise EngineError("empty prompt")
        if len(prompt) + 1 > self.model.max_len:
            raise EngineError(f"prompt of {len(prompt)} tokens exceeds the model window of {self.model.max_len}")
        if request.max_tokens < 1:
            raise EngineError("max_tokens must be at least 1")

    def fits_now(self, seq: Sequence) -> bool:
        """Enough free pages for the whole request even if none of its prefix were cached (no counters touched)."""
        return self.blocks.pages_needed(len(seq.prompt) + seq.max_tokens) <= len(self.blocks.free)

    def start(self, seq: Sequence) -> None:
        """Admission (serialized by the scheduler): match -> allocate -> gather the cached pages into the
        sequence's prefill cache. Raises EngineCapacityError (nothing allocated) if the request cannot fit."""
        seq.admitted = time.perf_counter()
        request, prompt = seq.request, seq.prompt
        match = self.blocks.match(prompt, self.model.fingerprint, request.salt)
        hits = self.tiers.extend(match, prompt, self.model.fingerprint, request.salt)  # tier hook: host, disk
        seq.table = self.blocks.allocate(match.page_ids, len(prompt) + seq.max_tokens)
        cached = len(match.page_ids) * self.page_size
        seq.prefill_cache = self.workspace.cache(match.page_ids, len(prompt))
        seq.prefilled = cached
        seq.usage = Usage(len(prompt), cached, len(prompt) - cached, 0, hits.host_tokens, hits.disk_tokens)
        seq.trace = Trace(self.page_size, len(match.page_ids), match.stop_reason,
                          tiers=hits.by_tier(cached), disk_rejected=hits.rejected)

    @torch.inference_mode()
    def prefill(self, seq: Sequence, chunk: int | None = None) -> bool:
        """Prefill the next `chunk` uncached prompt tokens (all of them when None). After the last chunk: write
        the prompt's KV into its pages, publish the full ones, and choose the first token. True when done."""
        prompt = seq.prompt
        end = len(prompt) if chunk is None else min(len(prompt), seq.prefilled + chunk)
        logits = self._prefill(prompt[seq.prefilled : end], seq.prefill_cache)
        seq.prefilled = end
        if end < len(prompt):
            return False
        cached, cache = seq.usage.cached_tokens, seq.prefill_cache
        seq.prefill_cache = None
        self.store.write(seq.table, [(layer.keys, layer.values) for layer in cache.layers], cached, len(prompt))
        self._publish_pages(seq.table, prompt, cached, len(prompt), seq.request.salt)
        if seq.request.sampling.seed is not None:
            seq.generator = torch.Generator(device=logits.device).manual_seed(seq.request.sampling.seed)
        seq.first_logits = logits.detach().clone() if seq.request.return_logits else None
        seq.take(logits, self.model.tokenizer)
        return True

    def finish(self, seq: Sequence) -> None:
        """Publish the full pages the generated tokens filled, unpin the table, count, and wake the caller."""
        if seq.table and seq.out:
            written = (len(seq.prompt) // self.page_size) * self.page_size
            self._publish_pages(seq.table, seq.prompt + seq.out, written, seq.kv_len, seq.request.salt)
        self.blocks.release(seq.table)
        seq.table, seq.prefill_cache = [], None
        if seq.error is None:
            seq.result = seq.to_result()
            self._count(seq.usage)
        seq.done.set()

    def _count(self, usage: Usage) -> None:
        with self._lock:
            self.requests += 1
            self.totals.add(usage)

    def _prefill(self, token_ids: list[int], cache: DynamicCache) -> torch.Tensor:
        ids = torch.tensor([token_ids], dtype=torch.long, device=self.model.device)
        model = self.model.model
        out = model(input_ids=ids, **with_cache(model, cache), use_cache=True, logits_to_keep=1)
        return out.logits[0, -1]

    def _publish_pages(self, table: list[int], tokens: list[int], start: int, end: int, salt: str | None) -> None:
        """Index every full page of `tokens[:end]` (KV already in the pool) from page-aligned `start` on."""
        first, have, P = start // self.page_size, end // self.page_size, self.page_size
        if have <= first:
            return
        fingerprint = self.model.fingerprint
        root = root_hash(fingerprint, salt)
        hashes = self.blocks.chain_hashes(tokens[: have * P], root)
        for i in range(first, have):
            origin = (fingerprint, root) if i == 0 else None
            self.blocks.register(table[i], hashes[i], tuple(tokens[i * P : (i + 1) * P]), origin)
        chunks = [tuple(tokens[i * P : (i + 1) * P]) for i in range(first, have)]
        self.tiers.persist(table[first:have], hashes[first:have], chunks)  # tier hook: write-through to disk

