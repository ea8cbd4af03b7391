"""A lean decode step for Llama-family models (Llama, Qwen2: SmolLM2 and Qwen2.5-Coder): the same modules and
weights as transformers' forward, called directly, without its per-call mask building, cache plumbing and
keyword dispatch. Other architectures decode through transformers' forward (lean_step returns None)."""

from __future__ import annotations

from typing import Any, Protocol

import torch
import torch.nn.functional as F

from engine.gguf_blocks import project

ARCHITECTURES = ("llama", "qwen2")


class KVAppend(Protocol):
    def update(self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        ...


def lean_step(model: Any) -> LeanStep | None:
    """The lean step for `model`, or None when its architecture is not one this step reproduces exactly."""
    config = model.config
    if config.model_type not in ARCHITECTURES or getattr(config, "hidden_act", None) != "silu":
        return None
    if any(kind != "full_attention" for kind in getattr(config, "layer_types", None) or []):
        return None  # sliding-window layers
    return LeanStep(model)


class LeanStep:
    def __init__(self, model: Any) -> None:
        self.model, self.body = model, model.model
        attn = self.body.layers[0].self_attn
        self.head_dim, self.scaling = attn.head_dim, attn.scaling
        self.kv_heads = model.config.num_key_value_heads

    def forward(self, ids: torch.Tensor, positions: torch.Tensor, cache: KVAppend,
                mask: torch.Tensor | None) -> torch.Tensor:
        """`ids`, `positions` [rows, 1]; `mask` [rows, 1, 1, width] or None (every row attends to all of the
        cache's positions): next-token logits [rows, vocab]."""
        rows, dim, groups = ids.shape[0], self.head_dim, self.kv_heads
        h = self.body.embed_tokens(ids)
        cos, sin = self.body.rotary_emb(h, positions)
        cos, sin = cos[:, None], sin[:, None]  # [rows, 1, 1, head_dim]: broadcast over heads
        for index, layer in enumerate(self.body.layers):
            attn = layer.self_attn
            x = layer.input_layernorm(h)
            # the query heads that share a KV head attend as that head's queries: one query token needs no causal
            # mask, and CPU attention kernels run this shape far faster than grouped-query heads
            q, k, v = project(x, (attn.q_proj, attn.k_proj, attn.v_proj))
            q = _rotate(q.view(rows, groups, -1, dim), cos, sin)
            k = _rotate(k.view(rows, -1, 1, dim), cos, sin)
            keys, values = cache.update(k, v.view(rows, -1, 1, dim), index)
            o = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=self.scaling)
            h = h + attn.o_proj(o.reshape(rows, 1, -1))
            mlp = layer.mlp  # transformers' LlamaMLP / Qwen2MLP: down(act(gate(x)) * up(x))
            gate, up = project(layer.post_attention_layernorm(h), (mlp.gate_proj, mlp.up_proj))
            h = h + mlp.down_proj(mlp.act_fn(gate) * up)
        return self.model.lm_head(self.body.norm(h))[:, -1]


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding of `x` [rows, heads, tokens, head_dim] (one position per row), in transformers'
    rotate_half form."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin
