"""The engine: match cached pages, prefill only the uncached suffix on top of them, write pages back, decode."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import torch
from transformers import DynamicCache

from engine.block_manager import BlockManager, root_hash
from engine.errors import EngineError
from engine.kv_store import KVStore
from engine.model import LoadedModel
from engine.request import Request, Result, Timings, Trace, Usage
from engine.sampling import apply_mask, sample

OnToken = Callable[[int, str], None]
DEFAULT_CAPACITY = 1 << 30


class Engine:
    def __init__(self, model: LoadedModel, page_size: int = 16, capacity_bytes: int = DEFAULT_CAPACITY) -> None:
        self.model = model
        self.page_size = page_size
        self.page_bytes = KVStore.page_bytes(model.num_layers, model.kv_heads, model.head_dim, page_size, model.dtype)
        num_pages = capacity_bytes // self.page_bytes
        if num_pages < 1:
            raise EngineError(f"KV capacity {capacity_bytes} bytes holds no page of {self.page_bytes} bytes")
        self.blocks = BlockManager(num_pages, page_size)
        self.store = KVStore(model.num_layers, model.kv_heads, model.head_dim, page_size, num_pages,
                             model.dtype, model.device)
        self.totals = Usage()
        self.requests = 0
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

    def generate(self, request: Request, on_token: OnToken | None = None) -> Result:
        arrived = time.perf_counter()
        prompt, counts = self.tokenize(request.segments)
        self._check_length(prompt, request)
        with self._lock:
            started = time.perf_counter()
            result = self._run(request, prompt, on_token, arrived)
        result.timings.queue_s = started - arrived
        result.trace.segment_tokens = counts
        self._count(result.usage)
        return result

    def stats(self) -> dict[str, int]:
        return {"requests": self.requests, **{f"{k}_total": v for k, v in self.totals.to_dict().items()},
                **self.blocks.stats(), "page_size": self.page_size, "page_bytes": self.page_bytes}

    def _check_length(self, prompt: list[int], request: Request) -> None:
        if not prompt:
            raise EngineError("empty prompt")
        if len(prompt) + 1 > self.model.max_len:
            raise EngineError(f"prompt of {len(prompt)} tokens exceeds the model window of {self.model.max_len}")
        if request.max_tokens < 1:
            raise EngineError("max_tokens must be at least 1")

    def _count(self, usage: Usage) -> None:
        with self._lock:
            self.requests += 1
            for name in usage.__slots__:
                setattr(self.totals, name, getattr(self.totals, name) + getattr(usage, name))

    @torch.inference_mode()
    def _run(self, request: Request, prompt: list[int], on_token: OnToken | None, arrived: float) -> Result:
        max_tokens = min(request.max_tokens, self.model.max_len - len(prompt))
        fingerprint = self.model.fingerprint
        match = self.blocks.match(prompt, fingerprint, request.salt)
        table = self.blocks.allocate(match.page_ids, len(prompt) + max_tokens)
        try:
            cached = len(match.page_ids) * self.page_size
            cache = DynamicCache(self.store.gather(match.page_ids)) if cached else DynamicCache()
            logits = self._forward(prompt[cached:], cache)
            self._write_pages(table, prompt, cache, cached, fingerprint, request.salt)
            usage = Usage(len(prompt), cached, len(prompt) - cached, 0)
            trace = Trace(self.page_size, len(match.page_ids), match.stop_reason)
            result = self._decode(request, prompt, logits, cache, max_tokens, on_token, arrived, usage, trace)
            written = (len(prompt) // self.page_size) * self.page_size
            self._write_pages(table, prompt + result.token_ids, cache, written, fingerprint, request.salt)
            return result
        finally:
            self.blocks.release(table)

    def _forward(self, token_ids: list[int], cache: DynamicCache) -> torch.Tensor:
        ids = torch.tensor([token_ids], dtype=torch.long, device=self.model.device)
        out = self.model.model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        return out.logits[0, -1]

    def _write_pages(self, table: list[int], tokens: list[int], cache: DynamicCache, start: int,
                     fingerprint: str, salt: str | None) -> None:
        """Store and index every full page of `tokens` from page-aligned `start` whose KV the cache holds."""
        have = min(cache.get_seq_length(), len(tokens)) // self.page_size
        first, P = start // self.page_size, self.page_size
        if have <= first:
            return
        layers = [(layer.keys, layer.values) for layer in cache.layers]
        self.store.write(table[first:have], layers, start)
        hashes = self.blocks.chain_hashes(tokens[: have * P], root_hash(fingerprint, salt))
        for i in range(first, have):
            origin = (fingerprint, root_hash(fingerprint, salt)) if i == 0 else None
            self.blocks.register(table[i], hashes[i], tuple(tokens[i * P : (i + 1) * P]), origin)

    def _decode(self, request: Request, prompt: list[int], logits: torch.Tensor, cache: DynamicCache,
                max_tokens: int, on_token: OnToken | None, arrived: float, usage: Usage, trace: Trace) -> Result:
        generator = None
        if request.sampling.seed is not None:
            generator = torch.Generator(device=logits.device).manual_seed(request.sampling.seed)
        stop_ids = self.model.eos_token_ids | set(request.stop_token_ids)
        first_logits = logits.detach().clone() if request.return_logits else None
        out: list[int] = []
        text, finish, first_at = "", "length", 0.0
        while True:
            allowed = request.logits_mask(out) if request.logits_mask else None
            token = sample(apply_mask(logits, allowed), request.sampling, generator)
            if not out:
                first_at = time.perf_counter()
            out.append(token)
            if token in stop_ids:
                finish = "stop"
                break
            new_text, hit_stop = self._detokenize(out, request.stop)
            if on_token is not None:
                on_token(token, new_text[len(text):])
            text = new_text
            if hit_stop:
                finish = "stop"
                break
            if len(out) >= max_tokens:
                break
            logits = self._forward([token], cache)
        done = time.perf_counter()
        usage.completion_tokens = len(out)
        tpot = (done - first_at) / (len(out) - 1) if len(out) > 1 else 0.0
        timings = Timings(0.0, first_at - arrived, tpot, done - arrived)
        return Result(out, text, finish, usage, timings, trace, first_logits)

    def _detokenize(self, out: list[int], stops: list[str]) -> tuple[str, bool]:
        if self.model.tokenizer is None:
            return "", False
        text = self.model.tokenizer.decode(out, skip_special_tokens=True)
        cuts = [text.find(s) for s in stops if s and s in text]
        return (text[: min(cuts)], True) if cuts else (text, False)
