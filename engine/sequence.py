"""One request in flight: its prompt and page hashes, page table, generated tokens, sampling state, and the
caller's wait."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from engine.request import Request, Result, Timings, Trace, Usage
from engine.sampling import apply_mask, check_drafted, sample
from engine.speculate import MAX_DRAFT, Costs, Speculation

OnToken = Callable[[int, str], None]


class Cancelled(Exception):
    """The caller cancelled its request (its client went away) before it finished."""


@dataclass(eq=False)
class Sequence:
    request: Request
    prompt: list[int]
    segment_tokens: list[int]
    max_tokens: int
    stop_ids: set[int]
    on_token: OnToken | None
    arrived: float
    root: int  # the root of its page hash chain: model fingerprint and salt
    page_hashes: list[int]  # of its full pages, chained from `root`: the prompt's from the start, computed once
    table: list[int] = field(default_factory=list)
    out: list[int] = field(default_factory=list)
    text: str = ""
    streamed: str = ""  # the part of `text` already passed to on_token
    finish: str | None = None  # "stop" or "length" once done
    error: BaseException | None = None
    usage: Usage = field(default_factory=Usage)
    trace: Trace = field(default_factory=Trace)
    generator: torch.Generator | None = None
    prefill_cache: Any = None  # the KV of prompt[:prefilled] while the prompt is being prefilled
    prefilled: int = 0
    first_logits: Any = None
    admitted: float = 0.0
    first_at: float = 0.0
    result: Result | None = None
    done: threading.Event = field(default_factory=threading.Event)
    cancel: threading.Event | None = None  # set by the caller to stop the request at the next loop turn
    speculation: Speculation | None = None  # None: the request does not speculate

    @property
    def kv_len(self) -> int:
        """Tokens whose KV is in the pool: the prompt and every generated token but the last (it is fed next)."""
        return len(self.prompt) + len(self.out) - 1 if self.out else len(self.prompt)

    @property
    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    @property
    def finished(self) -> bool:
        return self.finish is not None or self.error is not None

    def take_first(self, logits: torch.Tensor, tokenizer: Any) -> None:
        """After prefill: seed the sampler, keep the first logits if asked, and take the first token."""
        if self.request.sampling.seed is not None:
            self.generator = torch.Generator(device=logits.device).manual_seed(self.request.sampling.seed)
        self.first_logits = logits.detach().clone() if self.request.return_logits else None
        self.take(logits, tokenizer)

    def take(self, logits: torch.Tensor, tokenizer: Any) -> None:
        """Choose the next token from this sequence's logits, decide whether it is done, and stream it."""
        self.emit(sample(apply_mask(logits, self.allowed(self.out)), self.request.sampling, self.generator),
                  tokenizer)

    def allowed(self, ids: list[int]) -> torch.Tensor | None:
        """The request's mask of allowed next tokens after generated `ids` (None: no mask)."""
        return self.request.logits_mask(ids) if self.request.logits_mask else None

    def draft(self, costs: Costs, room: int) -> tuple[list[int], list[torch.Tensor | None]]:
        """Up to `room` drafted next tokens (engine.speculate): those the request's grammar forces, then what prompt
        lookup or the draft model proposes after them; cut before the first the request's mask does not allow, and
        after the first stop token (the reply would end there, and a grammar has nothing to follow past it). With the
        mask at each drafted position."""
        room = min(room, MAX_DRAFT)  # a verification of at most MAX_DRAFT + 1 rows: the block kernels' decode form
        forced = self.request.forced_tokens(self.out)[:room] if self.request.forced_tokens and room > 0 else []
        draft = forced + self.speculation.propose(self.prompt + self.out, room - len(forced), costs, forced)
        masks: list[torch.Tensor | None] = []
        for i, token in enumerate(draft):
            allowed = self.allowed(self.out + draft[:i])
            if allowed is not None and not (token < allowed.shape[0] and bool(allowed[token])):
                return draft[:i], masks
            masks.append(allowed)
            if token in self.stop_ids:
                return draft[: i + 1], masks
        return draft, masks

    def take_drafted(self, logits: torch.Tensor, draft: list[int], masks: list[torch.Tensor | None],
                     tokenizer: Any) -> int:
        """After a verification forward (logits [len(draft) + 1, vocab], row i after the last sampled token and
        draft[:i]): the drafted tokens while each is what this sequence chooses at its position, then its own
        choice. Stops where the sequence finishes. Returns how many drafted tokens it kept."""
        params = self.request.sampling
        for i, token in enumerate(draft):
            chosen, kept = check_drafted(apply_mask(logits[i], masks[i]), token, params, self.generator)
            self.emit(chosen, tokenizer)
            if not kept or self.finished:
                return i + kept
        self.take(logits[len(draft)], tokenizer)
        return len(draft)

    def emit(self, token: int, tokenizer: Any) -> None:
        """Append a chosen token, decide whether the sequence is done, and stream it."""
        if not self.out:
            self.first_at = time.perf_counter()
        self.out.append(token)
        if token in self.stop_ids:
            self.finish = "stop"
        else:
            self.text, hit_stop = detokenize(tokenizer, self.out, self.request.stop)
            if hit_stop:
                self.finish = "stop"
            elif len(self.out) >= self.max_tokens:
                self.finish = "length"
        if self.on_token is not None:
            ready = self.text if self.finished else settled_text(self.text, self.request.stop)
            self.on_token(token, ready[len(self.streamed):])
            self.streamed = ready

    def to_result(self) -> Result:
        done = time.perf_counter()
        self.usage.completion_tokens = len(self.out)
        tpot = (done - self.first_at) / (len(self.out) - 1) if len(self.out) > 1 else 0.0
        timings = Timings(self.admitted - self.arrived, self.first_at - self.arrived, tpot, done - self.arrived)
        self.trace.segment_tokens = self.segment_tokens
        return Result(self.out, self.text, self.finish or "length", self.usage, timings, self.trace, self.first_logits)


def settled_text(text: str, stops: list[str]) -> str:
    """The part of `text` that later tokens cannot change: without a trailing incomplete UTF-8 character
    (decoded as U+FFFD) and without a tail that may be the start of a stop string."""
    end = len(text.rstrip("\ufffd"))
    hold = max((k for s in stops for k in range(1, len(s)) if text[:end].endswith(s[:k])), default=0)
    return text[: end - hold]


def detokenize(tokenizer: Any, out: list[int], stops: list[str]) -> tuple[str, bool]:
    """The text so far, cut before the earliest stop string, and whether one was hit."""
    if tokenizer is None:
        return "", False
    text = tokenizer.decode(out, skip_special_tokens=True)
    cuts = [text.find(s) for s in stops if s and s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)
