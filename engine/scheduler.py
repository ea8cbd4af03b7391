"""Who runs when: FIFO admission into a capped running set, one engine thread, batched decode steps, and
chunked prefill so a long prompt never stalls the running decodes for more than one chunk at a time."""

from __future__ import annotations

import threading
from collections import deque
from typing import TYPE_CHECKING

from engine.batch import DecodeBatch
from engine.request import Result
from engine.sequence import Sequence

if TYPE_CHECKING:
    from engine.runner import Engine


class Scheduler:
    """Admission is serialized on the engine thread, so a request is matched only after every earlier
    request's prefill wrote its pages: a shared prefix is computed once, later requests reuse it.

    Fairness: while others are running, at most `prefill_chunk` prompt tokens are prefilled per loop turn, each
    turn also taking one batched decode step; with nothing running the first prompt is prefilled in one forward."""

    def __init__(self, engine: Engine, max_running: int, prefill_chunk: int) -> None:
        self.engine = engine
        self.max_running = max_running
        self.prefill_chunk = prefill_chunk
        self.waiting: deque[Sequence] = deque()
        self.prefilling: Sequence | None = None
        self.running: list[Sequence] = []
        self.batch: DecodeBatch | None = None
        self.steps = 0  # batched decode forwards
        self.rows = 0  # sequences stepped, summed over those forwards
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, seq: Sequence) -> Result:
        """Queue a sequence and block until it is done; the engine thread lives while there is work."""
        with self._lock:
            self.waiting.append(seq)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="agentcache-engine")
                self._thread.start()
        seq.done.wait()
        if seq.error is not None:
            raise seq.error
        return seq.result

    def _loop(self) -> None:
        while True:
            with self._lock:
                if not self.waiting and not self.running and self.prefilling is None:
                    self._thread = None
                    return
            try:
                self._admit_waiting()
                if self.running:
                    self._decode_step()
            except BaseException as error:  # a failed batched forward fails the running set, not the engine
                for seq in self.running:
                    seq.error = error
                    self.engine.finish(seq)
                self.running, self.batch = [], None

    def _admit_waiting(self) -> None:
        """FIFO: the head waits for pages while others run; it fails only if it could never fit. While others
        decode, at most `prefill_chunk` prompt tokens are prefilled before their next decode step."""
        budget = self.prefill_chunk if self.running else None
        while budget is None or budget > 0:
            if budget is None and self.running:  # one was admitted and waits to decode: chunk the rest
                budget = self.prefill_chunk
            seq = self.prefilling or self._start_next()
            if seq is None:
                return
            before = seq.prefilled
            try:
                done = self.engine.prefill(seq, budget)
            except Exception as error:  # a bad mask, a raising callback
                seq.error, done = error, True
            if budget is not None:
                budget -= seq.prefilled - before
            self.prefilling = None if done else seq
            if done:
                self._settle(seq)

    def _start_next(self) -> Sequence | None:
        """The head of the queue, admitted, or None when there is none, no slot, or (others running) no room."""
        while len(self.running) < self.max_running:
            with self._lock:
                if not self.waiting:
                    return None
                seq = self.waiting[0]
            if self.running and not self.engine.fits_now(seq):
                return None
            with self._lock:
                self.waiting.popleft()
            try:
                self.engine.start(seq)
                return seq
            except Exception as error:  # EngineCapacityError with an idle pool
                seq.error = error
                self.engine.finish(seq)
        return None

    def _settle(self, seq: Sequence) -> None:
        if seq.finished:
            self.engine.finish(seq)
        else:
            self.running.append(seq)

    def _decode_step(self) -> None:
        if self.batch is None or self.batch.seqs != self.running:
            self.batch = DecodeBatch(list(self.running), self.engine.store)
        logits = self.batch.forward(self.engine.model.model)
        self.steps, self.rows = self.steps + 1, self.rows + len(self.running)
        for row, seq in enumerate(self.running):
            try:
                seq.take(logits[row], self.engine.model.tokenizer)
            except Exception as error:
                seq.error = error
        for seq in self.running:
            if seq.finished:
                self.engine.finish(seq)
        self.running = [s for s in self.running if not s.finished]
        if not self.running:
            self.batch = None
