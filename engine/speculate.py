"""Speculative decoding for a sequence decoded alone (docs/engine.md, "Speculative decoding").

A draft of up to MAX_DRAFT tokens comes from the request's grammar and from the sequence itself: first the tokens the
grammar forces (the rest of a tool's name, `", "arguments": {"`), then the tokens that followed the most recent
earlier occurrence of the sequence's last n tokens (n from the longest of NGRAMS down; prompt lookup). Agent replies copy
a great deal from their context (paths, names, the code an edit replaces), and the context is all in the sequence.
The grammar, where the request has one, checks every drafted token in turn and the draft stops before the first it
does not allow. The target model then runs the last sampled token and the draft in one forward, each position
attending to the ones before it (engine.model_runner.ModelRunner.verify), and the sequence keeps drafted tokens
while they are what it would have chosen (engine.sampling.check_drafted), then the target's own next token: one
forward gives between one token and the draft's length plus one.

On a CPU a decode step mostly streams the weights, so a forward of a few positions costs little more than one:
`auto` sizes each draft by what a position costs on this machine (measured on the running engine, `Costs`) and
how many of this sequence's drafted tokens were accepted so far, and drafts nothing where that does not pay.
`lookup` always drafts what lookup finds.

A draft model (`Drafter`: a smaller model with the target's tokenizer, e.g. the 0.5B for the 1.5B, on its own engine
and paged pool, so the request's prefix is cached there too) guesses DRAFT_TOKENS tokens greedily under `draft`; under
`auto`, where lookup finds nothing and the draft model's measured cost and acceptance say it pays.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from engine.errors import EngineError
from engine.request import Request

MODES = ("off", "lookup", "draft", "auto")
SOURCES = ("lookup", "draft")  # where a draft's tokens after the grammar's forced ones come from
MAX_DRAFT = 8
DRAFT_TOKENS = 4  # the draft model's guesses per verification under `draft` (at most, under `auto`)
NGRAMS = (4, 3, 2)  # the n-gram lengths looked up, longest first (one token matches too often to be worth a draft)
PRIOR_ACCEPTED, PRIOR_DRAFTED = 3, 4  # acceptance before a sequence has drafted anything: 3/4, so it tries
EXTRA_ROW_GUESS = 0.5  # a position's cost beyond the first, as a share of a one-token step, before it is measured
SMOOTHING = 0.2  # weight of a new measurement in the running costs


class LookupIndex:
    """For each n of NGRAMS, where the latest occurrence of each n-gram of the tokens ended (the position of the
    token that followed it), kept as tokens are added."""

    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.follows: dict[int, dict[tuple[int, ...], int]] = {n: {} for n in NGRAMS}

    def extend(self, tokens: list[int]) -> None:
        for token in tokens:
            at = len(self.tokens)
            for n in NGRAMS:
                if at >= n:
                    self.follows[n][tuple(self.tokens[at - n : at])] = at
            self.tokens.append(token)

    def propose(self, limit: int, after: list[int] | tuple[int, ...] = ()) -> list[int]:
        """Up to `limit` tokens that followed the latest earlier occurrence of the longest n-gram the tokens, then
        `after` (tokens not in the index: a draft's forced head), end with; none if no n-gram of NGRAMS occurred
        before."""
        tail = self.tokens[-max(NGRAMS):] + list(after)
        for n in NGRAMS:
            if len(tail) >= n:
                at = self.follows[n].get(tuple(tail[-n:]))
                if at is not None:
                    return self.tokens[at : at + limit]
        return []


@dataclass
class Costs:
    """The running cost of a target forward: of a one-token decode step, and of each position a verification adds
    beyond the first, as a share of that step (what `auto` sizes drafts by)."""

    step_s: float | None = None
    extra_row: float = EXTRA_ROW_GUESS

    def step(self, seconds: float) -> None:
        self.step_s = seconds if self.step_s is None else (1 - SMOOTHING) * self.step_s + SMOOTHING * seconds

    def verified(self, positions: int, seconds: float) -> None:
        if self.step_s is None or positions < 2:
            return
        share = max(0.0, (seconds / self.step_s - 1) / (positions - 1))
        self.extra_row = (1 - SMOOTHING) * self.extra_row + SMOOTHING * share


def draft_length(acceptance: float, extra_row: float, limit: int) -> int:
    """The draft length k (0..limit) that gives the most tokens per unit of time, where each drafted token is
    accepted with probability `acceptance` after the one before it was (a forward of k + 1 positions then yields
    1 + a + ... + a^k tokens) and costs 1 + k x `extra_row` one-token steps. 0: no draft pays."""
    best, best_rate, expected = 0, 1.0, 1.0
    for k in range(1, limit + 1):
        expected += acceptance ** k
        rate = expected / (1 + k * extra_row)
        if rate > best_rate:
            best, best_rate = k, rate
    return best


class Drafter:
    """A draft model on its own engine: guesses a sequence's next tokens greedily, its prefix cached in its own pool
    (only the tokens since its last guess are prefilled). Keeps the running time of one guessed token."""

    def __init__(self, engine: Any, vocab_size: int) -> None:
        self.engine = engine
        self.vocab_size = vocab_size  # the target's: a guess past it (a padded id) ends the draft
        self.token_s: float | None = None

    def share(self, step_s: float | None) -> float:
        """A guessed token's cost as a share of the target's one-token step (0.5 until both are measured)."""
        return EXTRA_ROW_GUESS if self.token_s is None or not step_s else self.token_s / step_s

    def propose(self, tokens: list[int], limit: int) -> list[int]:
        if limit < 1 or len(tokens) + limit >= self.engine.model.max_len:
            return []
        start = time.perf_counter()
        try:
            guessed = self.engine.generate(Request([tokens], max_tokens=limit)).token_ids
        except EngineError:  # its pool cannot hold the sequence: no draft
            return []
        seconds = (time.perf_counter() - start) / max(len(guessed), 1)
        self.token_s = seconds if self.token_s is None else (1 - SMOOTHING) * self.token_s + SMOOTHING * seconds
        kept = next((i for i, token in enumerate(guessed) if token >= self.vocab_size), len(guessed))
        return guessed[:kept]


def check_pair(target: Any, draft: Any) -> None:
    """Refuse a draft model whose tokenizer is not the target's (its guesses would be other tokens)."""
    if target.tokenizer is None or draft.tokenizer is None:
        same = target.tokenizer is draft.tokenizer and target.config.vocab_size == draft.config.vocab_size
    else:
        same = target.tokenizer.get_vocab() == draft.tokenizer.get_vocab()
    if not same:
        raise EngineError(f"draft model '{draft.name}' does not share the tokenizer of '{target.name}': a draft "
                          "model must")


@dataclass
class Speculation:
    """One sequence's drafting: its lookup index, the draft model if the engine has one, and its drafted and
    accepted token counts per source (what `auto` sizes drafts by; the request's usage counts them in all)."""

    mode: str
    drafter: Drafter | None = None
    index: LookupIndex = field(default_factory=LookupIndex)
    sources: dict[str, list[int]] = field(default_factory=lambda: {source: [0, 0] for source in SOURCES})
    last: tuple[str, int] = ("", 0)  # the last draft's source and how many forced tokens led it

    def acceptance(self, source: str) -> float:
        drafted, accepted = self.sources[source]
        return (accepted + PRIOR_ACCEPTED) / (drafted + PRIOR_DRAFTED)

    def limit(self, source: str, costs: Costs, room: int) -> int:
        """How many tokens `source` drafts now: at most `room` (what the request may still generate, less the
        target's own token and the forced tokens) and its cap; under `auto`, what draft_length says pays, a draft
        model's guesses costing their own time on top of verification's."""
        limit = min(MAX_DRAFT if source == "lookup" else DRAFT_TOKENS, room)
        if self.mode == "auto":
            cost = costs.extra_row + (self.drafter.share(costs.step_s) if source == "draft" else 0.0)
            limit = draft_length(min(self.acceptance(source), 0.99), cost, limit)
        return max(limit, 0)

    def propose(self, tokens: list[int], room: int, costs: Costs, after: list[int] | None = None) -> list[int]:
        """The draft for the sequence whose tokens so far are `tokens`, continuing `after` them (forced tokens):
        prompt lookup's, else the draft model's. The index catches up with `tokens` first."""
        after = after or []
        self.index.extend(tokens[len(self.index.tokens):])
        self.last = ("", len(after))
        if self.mode in ("lookup", "auto"):
            found = self.index.propose(self.limit("lookup", costs, room), after)
            if found:
                self.last = ("lookup", len(after))
                return found
        if self.drafter is not None and self.mode in ("draft", "auto"):
            guessed = self.drafter.propose(tokens + after, self.limit("draft", costs, room))
            if guessed:
                self.last = ("draft", len(after))
                return guessed
        return []

    def record(self, drafted: int, accepted: int) -> None:
        """After a verification of the last draft, `drafted` tokens (its forced ones first), of which `accepted` were
        kept: the counts of the source that proposed the rest."""
        source, forced = self.last
        if source:
            counts = self.sources[source]
            counts[0] += max(drafted - forced, 0)
            counts[1] += max(accepted - forced, 0)
