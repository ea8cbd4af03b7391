"""The engine's facade: tokenize segments, make each request a sequence (its page hashes computed once, here),
hand it to the scheduler and wait; stats. Below it the scheduler drives the KV cache manager and the model runner."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from engine.kv.block_manager import RETENTION, chain_hashes, root_hash
from engine.errors import EngineError
from engine.kv.manager import KVCacheManager
from engine.kv.disk_dir import DEFAULT_DISK_BYTES
from engine.model import LoadedModel
from engine.model_runner import DECODE_PATHS, ModelRunner
from engine.request import Request, Result
from engine.scheduler import Scheduler
from engine.sequence import OnToken, Sequence
from engine.speculate import MODES, Drafter, Speculation, check_pair

DEFAULT_CAPACITY = 1 << 30
DEFAULT_MAX_RUNNING = 16
DEFAULT_PREFILL_CHUNK = 256


class Engine:
    def __init__(self, model: LoadedModel, page_size: int = 16, capacity_bytes: int = DEFAULT_CAPACITY,
                 max_running: int = DEFAULT_MAX_RUNNING, disk_dir: Path | None = None,
                 disk_bytes: int = DEFAULT_DISK_BYTES, host_bytes: int | None = None,
                 prefill_chunk: int = DEFAULT_PREFILL_CHUNK, threads: str = "auto",
                 draft: LoadedModel | None = None, graphs: str = "auto") -> None:
        """disk_dir None: no disk tier. host_bytes None: a host tier on CUDA only; 0: none. prefill_chunk: the
        most prompt tokens prefilled between two decode steps of running requests. threads: on a CPU, 'auto' runs
        each forward on the cores other processes leave free (engine.threads), 'all' always on all of PyTorch's. draft:
        a smaller model with this one's tokenizer for speculative decoding (engine.speculate.Drafter), on its own
        engine with a quarter of the pool's capacity; None: drafts come from prompt lookup only. graphs: 'auto'
        replays the decode step as CUDA graphs on a GPU, 'off' never, 'static' runs their fixed-shape step eagerly
        (engine.cuda_graphs)."""
        self.model = model
        self.page_size = page_size
        kv = KVCacheManager(model, page_size, capacity_bytes, disk_dir, disk_bytes, host_bytes)
        self.page_bytes = kv.page_bytes
        self.scheduler = Scheduler(kv, ModelRunner(model, kv.store, threads, graphs), max_running, prefill_chunk)
        self.drafter: Drafter | None = None
        if draft is not None:
            check_pair(model, draft)
            self.drafter = Drafter(Engine(draft, page_size, capacity_bytes // 4, max_running=1, threads=threads),
                                   model.config.vocab_size)

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
        root = root_hash(self.model.fingerprint, request.salt)
        seq = Sequence(request, prompt, counts, max_tokens, stop_ids, on_token, arrived, root,
                       chain_hashes(prompt, self.page_size, root), cancel=cancel,
                       speculation=Speculation(request.speculate, self.drafter) if request.speculate != "off" else None)
        return self.scheduler.submit(seq)

    def stats(self) -> dict[str, int]:
        s = self.scheduler
        return {**s.request_stats(), **s.kv.stats(), "page_size": self.page_size, "page_bytes": self.page_bytes,
                "decode_steps": s.steps, "decode_rows": s.rows, "threads": s.runner.threads.count,
                **{f"decode_steps_{path}": s.runner.path_steps[path] for path in DECODE_PATHS},
                "verify_steps": s.runner.path_steps["verify"],
                "graph_captures": s.runner.graphs.captures if s.runner.graphs is not None else 0}

    def _check_length(self, prompt: list[int], request: Request) -> None:
        if not prompt:
            raise EngineError("empty prompt")
        if len(prompt) + 1 > self.model.max_len:
            raise EngineError(f"prompt of {len(prompt)} tokens exceeds the model window of {self.model.max_len}")
        if request.max_tokens < 1:
            raise EngineError("max_tokens must be at least 1")
        if request.speculate not in MODES:
            raise EngineError(f"unknown speculate mode {request.speculate!r} (known: {', '.join(MODES)})")
        if request.speculate == "draft" and self.drafter is None:
            raise EngineError("speculate 'draft' needs a draft model: this engine has none (Engine(draft=...); "
                              "agentcache: draft_model in agentcache.yaml)")
        if request.retention is not None:
            if len(request.retention) != len(request.segments):
                raise EngineError(f"retention names {len(request.retention)} classes for {len(request.segments)} "
                                  "segments: give one per segment")
            unknown = sorted(set(request.retention) - set(RETENTION))
            if unknown:
                raise EngineError(f"unknown retention class {unknown[0]!r} (known: {', '.join(RETENTION)})")
