"""Prefill's attention on the CPU kernels (kernels/decode_ops.cpp) of a model on GGUF blocks: every new
token's query heads attend over the cached positions and the new tokens up to their own, as transformers' causal
attention does, computed by the kernel decode uses (each new token a row, all rows over the same keys). PyTorch's
CPU attention takes about twice as long for a turn's new tokens over a long cached prefix."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

NAME = "agentcache_cpu"
KERNEL_DTYPES = (torch.float32, torch.bfloat16)


def use(model: Any, ops: Any) -> None:
    """Give `model`'s attention layers `ops` (the built kernels) and run their attention through `attend` (the name
    transformers looks attention functions up by). transformers then builds no attention mask: a forward must be
    what the engine's prefill runs, one sequence without padding whose new tokens follow its cache (decode rows,
    padded to one another, must go through the lean decode step: engine.model.load_model chooses this only for
    models that have one)."""
    AttentionInterface.register(NAME, attend)  # transformers' one table of attention functions, by name
    for module in model.modules():
        if hasattr(module, "num_key_value_groups"):  # an attention layer
            module.cpu_kernels = ops
    model.config._attn_implementation = NAME


def attend(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: Any,
           scaling: float | None = None, dropout: float = 0.0, **_: Any) -> tuple[torch.Tensor, None]:
    """transformers' attention function: `query` [batch, heads, new, dim], `key`/`value` [batch, kv_heads, cached +
    new, dim] -> [batch, new, heads, dim]. The new tokens are the last of the keys' positions."""
    batch, heads, new, dim = query.shape
    kv_heads, width = key.shape[1], key.shape[2]
    scale = scaling if scaling is not None else dim ** -0.5
    if batch != 1 or query.device.type != "cpu" or query.dtype not in KERNEL_DTYPES or dim % 16 or dropout:
        positions = torch.arange(width - new, width, device=query.device)
        causal = torch.arange(width, device=query.device)[None, :] <= positions[:, None]
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=causal, scale=scale, enable_gqa=True)
        return out.transpose(1, 2).contiguous(), None
    # each new token a row: its query heads grouped under their KV head, over the one sequence's keys (stride 0)
    q = query[0].view(kv_heads, heads // kv_heads, new, dim).permute(2, 0, 1, 3).contiguous()
    counts = torch.arange(width - new + 1, width + 1)
    out = module.cpu_kernels.shared_attention(q, key.expand(new, -1, -1, -1), value.expand(new, -1, -1, -1), counts,
                                              scale)
    return out.view(1, new, heads, dim), None
