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
"""

from __future__ import annotations

from dataclasses import dataclass, field

MODES = ("off", "lookup", "auto")
MAX_DRAFT = 8
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


@dataclass
class Speculation:
    """One sequence's drafting: its lookup index and its drafted and accepted token counts."""

    mode: str
    index: LookupIndex = field(default_factory=LookupIndex)
    drafted: int = 0
    accepted: int = 0
    verifications: int = 0

    def limit(self, costs: Costs, room: int) -> int:
        """How many tokens to draft now: at most `room` (what the request may still generate, less the target's
        own token) and MAX_DRAFT; under `auto`, what draft_length says pays."""
        limit = min(MAX_DRAFT, room)
        if self.mode == "auto":
            acceptance = (self.accepted + PRIOR_ACCEPTED) / (self.drafted + PRIOR_DRAFTED)
            limit = draft_length(min(acceptance, 0.99), costs.extra_row, limit)
        return max(limit, 0)

    def propose(self, tokens: list[int], limit: int, after: list[int] | None = None) -> list[int]:
        """The lookup draft for the sequence whose tokens so far are `tokens`, continuing `after` them (the index
        catches up with `tokens` first)."""
        self.index.extend(tokens[len(self.index.tokens):])
        return self.index.propose(limit, after or ()) if limit > 0 else []

    def record(self, drafted: int, accepted: int) -> None:
        self.drafted, self.accepted, self.verifications = (self.drafted + drafted, self.accepted + accepted,
                                                           self.verifications + 1)
