"""A lean decode step for Llama-family models (Llama, Qwen2: SmolLM2 and Qwen2.5-Coder): the same modules and
weights as transformers' forward, called directly, without its per-call mask building, cache plumbing and
keyword dispatch. On GGUF blocks its norms, gating and residual adds run inside the block kernel calls, and its
rotary embedding and attention in the same C++ extension (engine/gguf/kernels/decode_ops.cpp); on a decode batch's KV
buffer the loop over the layers runs there too, in one call a step (DecodeLayers: about 2 ms a step less on the
1.5B). Other architectures decode through transformers' forward (lean_step returns None)."""

from __future__ import annotations

from typing import Any, Protocol

import torch
import torch.nn.functional as F

from engine.gguf.blocks import KERNEL_DTYPES, GGUFLinear, Projection

ARCHITECTURES = ("llama", "qwen2")


class KVAppend(Protocol):
    """A step's KV cache: each layer's new keys and values in, the layer's keys and values to attend over out. A
    cache that is one preallocated buffer may also offer `buffer()` (engine.batch.BufferView): the fused layers then
    write and read it themselves."""

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        ...


def lean_step(model: Any) -> LeanStep | None:
    """The lean step for `model`, or None when its architecture is not one this step reproduces exactly."""
    return LeanStep(model) if reproduces(model.config) else None


def reproduces(config: Any) -> bool:
    """Whether the lean step reproduces a model of `config` exactly (Llama/Qwen2, SiLU, full attention)."""
    if config.model_type not in ARCHITECTURES or getattr(config, "hidden_act", None) != "silu":
        return False
    return all(kind == "full_attention" for kind in getattr(config, "layer_types", None) or [])  # no sliding window


class LeanStep:
    def __init__(self, model: Any) -> None:
        self.model, self.body = model, model.model
        attn = self.body.layers[0].self_attn
        self.head_dim, self.scaling = attn.head_dim, attn.scaling
        self.kv_heads = model.config.num_key_value_heads
        self.layers = [_Layer(layer) for layer in self.body.layers]
        self.head = Projection((model.lm_head,), self.body.norm)
        # the C++ kernels a model on GGUF blocks was built with also rotate and attend (gguf/kernels/decode_ops.cpp)
        layer = next((m for m in model.modules() if isinstance(m, GGUFLinear)), None)
        self.ops = layer.ops if layer is not None and self.head_dim % 16 == 0 else None
        self.fused = _fused_layers(self) if self.ops is not None else None

    def path(self, dtype: torch.dtype, device: torch.device, buffered: bool) -> str:
        """Which of the step's paths runs for activations of `dtype` on `device` (docs/engine.md, "Decode paths"):
        'fused' (every layer in one C++ call, on a decode buffer), 'lean-kernels' (the layers looped here, each on the
        C++ kernels), or 'lean' (the layers looped here, in torch)."""
        if self.ops is None or device.type != "cpu" or dtype not in KERNEL_DTYPES:
            return "lean"
        return "fused" if self.fused is not None and buffered else "lean-kernels"

    def forward(self, ids: torch.Tensor, positions: torch.Tensor, cache: KVAppend,
                mask: torch.Tensor | None) -> torch.Tensor:
        """`ids`, `positions` [rows, 1]: each row's token attends to its cache's positions up to its own; `mask`
        [rows, 1, 1, width] says the same (None: every row attends to all of the cache's positions). Next-token
        logits [rows, vocab]."""
        rows, dim, groups = ids.shape[0], self.head_dim, self.kv_heads
        h = self.body.embed_tokens(ids)
        cos, sin = self.body.rotary_emb(h, positions)
        buffer = getattr(cache, "buffer", None)  # the optional part of KVAppend
        path = self.path(h.dtype, h.device, buffer is not None)
        ops = self.ops if path != "lean" else None
        if ops is not None:  # the kernels' forms, once a step: [rows, dim] angles, each row's count of keys
            cos, sin, counts = cos.view(rows, dim), sin.view(rows, dim), positions[:, 0] + 1
            if path == "fused":  # every layer in one call
                h = self.fused.step(h.view(rows, -1), cos, sin, counts, *buffer()).view(rows, 1, -1)
                return self.head(h)[0][:, -1]
        else:
            cos, sin = cos[:, None], sin[:, None]  # [rows, 1, 1, dim]: broadcast over heads
        for index, layer in enumerate(self.layers):
            q, k, v = layer.qkv(h)
            # the query heads that share a KV head attend as that head's queries: one query token needs no causal
            # mask, and CPU attention kernels run this shape far faster than grouped-query heads
            q, k = q.view(rows, groups, -1, dim), k.view(rows, -1, 1, dim)
            if ops is not None:
                ops.rope_(q.view(rows, -1, dim), k.view(rows, -1, dim), cos, sin)
            else:
                q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
            keys, values = cache.update(k, v.view(rows, -1, 1, dim), index)
            if ops is not None:
                o = ops.attention(q, keys, values, counts, self.scaling)
            else:
                o = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=self.scaling)
            h = layer.o(o.reshape(rows, 1, -1), residual=h)[0]
            h = layer.down(layer.gate_up(h, gated=True)[0], residual=h)[0]
        return self.head(h)[0][:, -1]


class _Layer:
    """One decoder layer's projections, with the norms before them: q/k/v, o, gate/up (act silu: lean_step), down."""

    def __init__(self, layer: Any) -> None:
        attn, mlp = layer.self_attn, layer.mlp  # transformers' LlamaMLP / Qwen2MLP: down(act(gate(x)) * up(x))
        self.qkv = Projection((attn.q_proj, attn.k_proj, attn.v_proj), layer.input_layernorm)
        self.o = Projection((attn.o_proj,))
        self.gate_up = Projection((mlp.gate_proj, mlp.up_proj), layer.post_attention_layernorm)
        self.down = Projection((mlp.down_proj,))


def _fused_layers(step: LeanStep) -> Any | None:
    """The C++ loop over every layer (engine/gguf/kernels/decode_ops.cpp, DecodeLayers) when every projection runs on
    GGUF blocks and the norms share one epsilon; None otherwise."""
    projections = [p for layer in step.layers for p in (layer.qkv, layer.o, layer.gate_up, layer.down)]
    norms = [p.norm for layer in step.layers for p in (layer.qkv, layer.gate_up)]
    if any(p.ops is None for p in projections) or len({n.variance_epsilon for n in norms}) != 1:
        return None
    return step.ops.DecodeLayers([b for p in projections for b in p.blocks], [t for p in projections for t in p.types],
                                 [b for p in projections for b in p.biases], [n.weight for n in norms],
                                 norms[0].variance_epsilon, step.kv_heads, step.head_dim, step.scaling)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding of `x` [rows, heads, tokens, head_dim] (one position per row), in transformers'
    rotate_half form."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin
