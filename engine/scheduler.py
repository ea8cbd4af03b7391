"""Who runs when: FIFO admission into a capped running set, run by the callers in turn, batched decode steps, and
chunked prefill so a long prompt never stalls the running decodes for more than one chunk at a time. The scheduler
owns the KV cache manager and the model runner; neither calls back."""

from __future__ import annotations

import threading
import time
from collections import deque

from engine.batch import DecodeBatch
from engine.kv.manager import KVCacheManager
from engine.model_runner import ModelRunner
from engine.request import Result, Usage
from engine.sequence import Cancelled, Sequence
from engine.speculate import Costs


class Scheduler:
    """Admission is serialized: a request is matched only after every earlier request's prefill wrote its
    pages, so a shared prefix is computed once and later requests reuse it.

    Leader and followers, no engine thread: the first caller with nothing running becomes the leader and runs
    loop turns on its own thread until its request is done, then hands over to a waiting caller. A
    single-threaded caller computes on its own thread, which matters on the CPU: every thread that runs
    parallel torch ops keeps an OpenMP team, and with more team threads than cores OpenMP stops spinning
    between parallel regions, which made each forward ~15% slower on a two-core machine.

    Fairness: while others are running, at most `prefill_chunk` prompt tokens are prefilled per loop turn, each
    turn also taking one batched decode step; with nothing running the first prompt is prefilled in one forward."""

    def __init__(self, kv: KVCacheManager, runner: ModelRunner, max_running: int, prefill_chunk: int) -> None:
        self.kv, self.runner = kv, runner
        self.max_running = max_running
        self.prefill_chunk = prefill_chunk
        self.waiting: deque[Sequence] = deque()
        self.prefilling: Sequence | None = None
        self.running: list[Sequence] = []
        self.batch: DecodeBatch | None = None
        self.steps = 0  # batched decode forwards
        self.rows = 0  # sequences stepped, summed over those forwards
        self.totals = Usage()  # of the requests that finished without error
        self.costs = Costs()  # what a decode step and a verification cost here (engine.speculate)
        self.requests = 0
        self._count_lock = threading.Lock()
        self._lock = threading.Condition()  # guards `waiting` and `_leading`; followers wait on it
        self._leading = False
        self._finished = False  # a sequence finished in this turn: wake the followers

    def submit(self, seq: Sequence) -> Result:
        """Queue a sequence and block until it is done, leading the loop whenever no one else does."""
        with self._lock:
            self.waiting.append(seq)
            try:
                while not seq.done.is_set() and self._leading:
                    self._lock.wait()
            except BaseException:  # a follower interrupted while it waits
                self._withdraw(seq)
                raise
            lead = not seq.done.is_set()  # here either it is done or no one leads
            if lead:
                self._leading = True
        if lead:
            self._lead(seq)
        if seq.error is not None:
            raise seq.error
        return seq.result

    def request_stats(self) -> dict[str, int]:
        """Finished requests and their usage summed: `requests` and `<usage field>_total`."""
        with self._count_lock:
            return {"requests": self.requests, **{f"{k}_total": v for k, v in self.totals.to_dict().items()}}

    def _lead(self, seq: Sequence) -> None:
        try:
            while not seq.done.is_set():
                self._turn()
                if self._finished:
                    self._finished = False
                    with self._lock:
                        self._lock.notify_all()
        finally:
            with self._lock:
                if not seq.done.is_set():  # the leader was interrupted
                    self._withdraw(seq)
                self._leading = False
                self._lock.notify_all()

    def _withdraw(self, seq: Sequence) -> None:
        """Drop an interrupted caller's request if it was not admitted yet (the lock held)."""
        if seq in self.waiting:
            self.waiting.remove(seq)

    def _turn(self) -> None:
        """Admit (and prefill) what fits, then one batched decode step."""
        try:
            self._drop_cancelled()
            self._admit_waiting()
            if self.running:
                self._decode_step()
        except BaseException as error:  # a failed forward fails the sequences in flight, not the engine
            for seq in self.running + ([self.prefilling] if self.prefilling else []):
                seq.error = error
                self._finish(seq)
            self.running, self.batch, self.prefilling = [], None, None
            if not isinstance(error, Exception):  # KeyboardInterrupt and the like reach the leader's caller
                raise

    def _drop_cancelled(self) -> None:
        """Finish every cancelled sequence, queued, prefilling or running, releasing its pages like any other."""
        with self._lock:
            dropped = [seq for seq in self.waiting if seq.cancelled]
            for seq in dropped:
                self.waiting.remove(seq)
        if self.prefilling is not None and self.prefilling.cancelled:
            dropped.append(self.prefilling)
            self.prefilling = None
        dropped += [seq for seq in self.running if seq.cancelled]
        self.running = [seq for seq in self.running if seq not in dropped]
        for seq in dropped:
            seq.error = Cancelled("the request was cancelled")
            self._finish(seq)

    def _finish(self, seq: Sequence) -> None:
        """Publish and unpin its pages, count it, and wake its caller."""
        self.kv.release(seq)
        seq.prefill_cache = None
        if seq.error is None:
            seq.result = seq.to_result()
            with self._count_lock:
                self.requests += 1
                self.totals.add(seq.usage)
        seq.done.set()
        self._finished = True

    def _admit_waiting(self) -> None:
        """FIFO: the head waits for pages while others run; it fails only if it could never fit. While others
        decode, at most `prefill_chunk` prompt tokens are prefilled before their next decode step."""
        budget = self.prefill_chunk if self.running else None
        while budget is None or budget > 0:
            if budget is None and self.running:  # one was admitted and waits to decode: chunk the rest
                budget = self.prefill_chunk
            seq = self.prefilling = self.prefilling or self._start_next()
            if seq is None:
                return
            before = seq.prefilled
            try:
                done = self._prefill(seq, budget)
            except Exception as error:  # a bad mask, a raising callback
                seq.error, done = error, True
            if budget is not None:
                budget -= seq.prefilled - before
            if done:
                self.prefilling = None
                self._settle(seq)

    def _prefill(self, seq: Sequence, chunk: int | None) -> bool:
        """The next chunk of the prompt; after the last one publish its pages and take the first token. True: done."""
        logits = self.runner.prefill(seq, chunk)
        if logits is None:
            return False
        self.kv.publish_prompt(seq)
        seq.take_first(logits, self.runner.tokenizer)
        return True

    def _start_next(self) -> Sequence | None:
        """The head of the queue, admitted, or None when there is none, no slot, or (others running) no room."""
        while len(self.running) < self.max_running:
            with self._lock:
                if not self.waiting:
                    return None
                seq = self.waiting[0]
            if self.running and not self.kv.fits_now(seq):
                return None
            with self._lock:
                self.waiting.popleft()
            try:
                self._start(seq)
                return seq
            except Exception as error:  # EngineCapacityError with an idle pool
                seq.error = error
                self._finish(seq)
        return None

    def _start(self, seq: Sequence) -> None:
        """Admission: match and allocate its pages, then gather the cached ones for its prefill. Raises
        EngineCapacityError (nothing allocated) if it cannot fit."""
        seq.admitted = time.perf_counter()
        cached = self.kv.admit(seq)
        self.runner.begin_prefill(seq, cached)

    def _settle(self, seq: Sequence) -> None:
        if seq.finished:
            self._finish(seq)
        else:
            self.running.append(seq)

    def _decode_step(self) -> None:
        if self.batch is None or self.batch.seqs != self.running:
            self.batch = None  # its buffer goes before the next one is allocated
            self.batch = self.runner.decode_batch(list(self.running))
        if not self._speculative_step():
            start = time.perf_counter()
            logits = self.runner.decode(self.batch)
            if len(self.running) == 1:
                self.costs.step(time.perf_counter() - start)
            self.steps, self.rows = self.steps + 1, self.rows + len(self.running)
            for row, seq in enumerate(self.running):
                try:
                    seq.take(logits[row], self.runner.tokenizer)
                except Exception as error:
                    seq.error = error
        self._settle_running()

    def _speculative_step(self) -> bool:
        """Speculative decoding (engine.speculate) for a sequence running alone: draft, verify the draft in one
        forward, keep what the sequence accepts. False where nothing was drafted: the plain step runs."""
        seq = self.running[0]
        if seq.speculation is None or not self.runner.can_verify(self.batch):
            return False
        try:
            draft, masks = seq.draft(self.costs, seq.max_tokens - len(seq.out) - 1)
        except Exception as error:  # a raising mask
            seq.error = error
            return True
        if not draft:
            return False
        start = time.perf_counter()
        logits = self.runner.verify(self.batch, draft)
        self.costs.verified(len(draft) + 1, time.perf_counter() - start)
        try:
            kept = seq.take_drafted(logits, draft, masks, self.runner.tokenizer)
        except Exception as error:
            seq.error, kept = error, 0
        self.batch.commit_drafted(kept)
        seq.speculation.record(len(draft), kept)
        seq.usage.drafted_tokens += len(draft)
        seq.usage.accepted_tokens += kept
        return True

    def _settle_running(self) -> None:
        """Finish the running sequences that are done."""
        for seq in self.running:
            if seq.finished:
                self._finish(seq)
        self.running = [s for s in self.running if not s.finished]
        if not self.running:
            self.batch = None
