"""The model runner: every forward. Prefill a sequence's uncached prompt on top of its cached pages and write the
prompt's KV into its pages; one batched decode forward for the running sequences, straight from the pool."""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache

from engine.batch import BUFFER_SHARE, DecodeBatch
from engine.cuda_graphs import DecodeGraphs
from engine.decode_step import LeanStep, lean_step
from engine.errors import EngineError
from engine.kv.store import KVStore
from engine.model import LoadedModel, with_cache
from engine.prefill_buffer import PrefillBuffer
from engine.sequence import Sequence
from engine.threads import Threads

DECODE_PATHS = ("transformers", "lean", "lean-kernels", "fused", "graph")  # docs/engine.md, "Decode paths"
FORWARDS = (*DECODE_PATHS, "verify")  # the decode paths' steps and speculative decoding's verifications
THREAD_POLICIES = ("auto", "all")
GRAPH_MODES = ("auto", "off", "static")


class ModelRunner:
    """Reads and writes the pool's tensors (`store`) at the pages a sequence's table names; owns no pages."""

    def __init__(self, model: LoadedModel, store: KVStore, threads: str = "auto", graphs: str = "auto") -> None:
        """`threads`: 'auto' runs each forward on the CPU cores other processes leave free, 'all' on all of
        PyTorch's threads (engine.threads; off the CPU, always 'all'). `graphs`: 'auto' replays the lean decode step
        as CUDA graphs on a GPU (engine.cuda_graphs), 'off' never, 'static' runs their fixed-shape step eagerly on
        any device (what the graphs record, testable on a CPU)."""
        if threads not in THREAD_POLICIES:
            raise EngineError(f"unknown threads policy '{threads}' (known: {', '.join(THREAD_POLICIES)})")
        if graphs not in GRAPH_MODES:
            raise EngineError(f"unknown graphs mode '{graphs}' (known: {', '.join(GRAPH_MODES)})")
        self.model, self.store = model, store
        self.threads = Threads(fixed=threads == "all" or model.device.type != "cpu")
        self.prefill_buffer = PrefillBuffer(store)
        self.lean: LeanStep | None = lean_step(model.model)  # None: decode through transformers' forward
        mode = {"auto": "capture" if model.device.type == "cuda" else None, "static": "static", "off": None}[graphs]
        self.graphs = DecodeGraphs(self.lean, store, store.num_slots // BUFFER_SHARE, mode) \
            if mode is not None and self.lean is not None else None
        self.path_steps = dict.fromkeys(FORWARDS, 0)  # decode steps each path ran, and verification forwards

    @property
    def tokenizer(self) -> Any | None:
        return self.model.tokenizer

    def begin_prefill(self, seq: Sequence, cached_pages: list[int]) -> None:
        """Gather the cached pages into the sequence's prefill cache, with room for the rest of its prompt."""
        seq.prefill_cache = self.prefill_buffer.cache(cached_pages, len(seq.prompt))
        seq.prefilled = len(cached_pages) * self.store.page_size

    @torch.inference_mode()
    def prefill(self, seq: Sequence, chunk: int | None = None) -> torch.Tensor | None:
        """Prefill the next `chunk` uncached prompt tokens (all of them when None). After the last chunk: write the
        prompt's KV into its pages and return the next-token logits; None while prompt tokens remain."""
        self.threads.apply()
        prompt = seq.prompt
        end = len(prompt) if chunk is None else min(len(prompt), seq.prefilled + chunk)
        logits = self._forward(prompt[seq.prefilled : end], seq.prefill_cache)
        seq.prefilled = end
        if end < len(prompt):
            return None
        cache, seq.prefill_cache = seq.prefill_cache, None
        self.store.write(seq.table, [(layer.keys, layer.values) for layer in cache.layers],
                         seq.usage.cached_tokens, len(prompt))
        return logits

    def decode_path(self, batch: DecodeBatch) -> str:
        """Which decode path a step of `batch` runs: 'transformers' (its forward, for an architecture the lean step does
        not reproduce), 'graph' (the lean step on a graph bucket, engine.cuda_graphs), or the lean step's own
        (LeanStep.path)."""
        if self.lean is None:
            return "transformers"
        if batch.bucket is not None:
            return "graph"
        return self.lean.path(self.model.dtype, self.model.device, batch.buffered)

    def decode_batch(self, seqs: list[Sequence]) -> DecodeBatch:
        return DecodeBatch(seqs, self.store, self.graphs)

    def can_verify(self, batch: DecodeBatch) -> bool:
        """Whether a verification forward (engine.speculate) can run on `batch`: one sequence, on a decode buffer,
        through the lean step (which takes one position a row)."""
        return self.lean is not None and batch.buffered and len(batch.seqs) == 1

    @torch.inference_mode()
    def verify(self, batch: DecodeBatch, draft: list[int]) -> torch.Tensor:
        """One forward of the batch's one sequence at its last sampled token and the `draft` after it, each position
        attending to the ones before it: logits [len(draft) + 1, vocab], row i the next-token logits after draft[:i].
        The KV of every position goes into the decode buffer; DecodeBatch.commit_drafted writes the kept ones to the
        pool. The positions run as the rows of a lean step, on the block kernels where the model has them; the
        fused path needs a buffer row per row and does not run here."""
        self.threads.apply()
        ids, positions, view, mask = batch.draft_step(draft)
        self.path_steps["verify"] += 1
        return self.lean.forward(ids, positions, view, mask)

    @torch.inference_mode()
    def decode(self, batch: DecodeBatch) -> torch.Tensor:
        """One decode step for every row of the batch: each row's last sampled token at its own position. Next-token
        logits, one row per sequence. Which path runs: docs/engine.md, "Decode paths"."""
        self.threads.apply()
        ids, positions, view, mask = batch.step()
        path = self.decode_path(batch)
        self.path_steps[path] += 1
        if path == "graph":
            logits = self.graphs.step(batch.bucket, ids, positions[:, 0])
        elif self.lean is not None:
            logits = self.lean.forward(ids, positions, view, None if batch.uniform else mask)
        else:
            model = self.model.model
            out = model(input_ids=ids, attention_mask=mask, position_ids=positions, **with_cache(model, view),
                        use_cache=True, logits_to_keep=1)
            logits = out.logits[:, -1]
        batch.commit()
        return logits

    def _forward(self, token_ids: list[int], cache: DynamicCache) -> torch.Tensor:
        ids = torch.tensor([token_ids], dtype=torch.long, device=self.model.device)
        model = self.model.model
        out = model(input_ids=ids, **with_cache(model, cache), use_cache=True, logits_to_keep=1)
        return out.logits[0, -1]
