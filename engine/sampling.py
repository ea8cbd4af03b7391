"""Next-token choice: an optional allowed-token mask, then greedy or temperature / top-p sampling; and the choice at
a drafted position of speculative decoding (engine.speculate), which keeps the same distribution."""

from __future__ import annotations

import torch

from engine.errors import EngineError
from engine.request import SamplingParams


def apply_mask(logits: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
    if allowed is None:
        return logits
    allowed = allowed.to(device=logits.device, dtype=torch.bool)[: logits.shape[-1]]
    if not bool(allowed.any()):
        raise EngineError("the logits mask allows no token at this step")
    masked = torch.full_like(logits, float("-inf"))
    width = allowed.shape[0]
    masked[:width] = torch.where(allowed, logits[:width], masked[:width])
    return masked


def sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    if params.greedy:
        return int(torch.argmax(logits.float()))  # exact; PyTorch's argmax over bfloat16 is ~5x slower
    return int(torch.multinomial(distribution(logits, params), 1, generator=generator))


def distribution(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """What a sampled choice draws from: softmax at the temperature, cut to the top-p nucleus (not renormalized:
    torch.multinomial takes weights)."""
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_probs, dim=-1) - sorted_probs < params.top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
    return probs


def check_drafted(logits: torch.Tensor, drafted: int, params: SamplingParams,
                  generator: torch.Generator | None) -> tuple[int, bool]:
    """The token at a position a draft proposed `drafted` for, and whether it is the drafted one. Greedy: the
    target's own choice, so speculative output equals plain decoding token for token. Sampled, with a draft that
    proposes one token for certain (prompt lookup, the grammar): keep it with the target's probability p(drafted),
    else draw from p without it, renormalized; either way the token is distributed as p (the rule of Leviathan et
    al. and Chen et al., 2023, for a point-mass draft)."""
    if params.greedy:
        token = sample(logits, params, generator)
        return token, token == drafted
    probs = distribution(logits, params)
    probs = probs / probs.sum()
    if float(torch.rand((), generator=generator, device=probs.device)) < float(probs[drafted]):
        return drafted, True
    probs[drafted] = 0.0
    return int(torch.multinomial(probs, 1, generator=generator)), False
