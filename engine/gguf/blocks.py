"""Linear layers that run on the model's GGUF blocks themselves (Q4_K and Q6_K, what a Q4_K_M file holds): the
weights are the file's, not re-quantized, and a decode step reads 4.5-6.6 bits a weight.

The kernels are C++ (`engine/gguf/kernels/blocks.cpp`, built by engine.gguf.build). A step with few rows (decode)
quantizes its activations to int8 in blocks of 256 and runs integer dot products on the blocks (llama.cpp's
approach), spread over PyTorch's threads; a step with more rows (prefill) widens the blocks to the activations'
dtype and runs a plain matmul.
"""

from __future__ import annotations

import mmap
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import EngineError

BLOCK_TYPES = {"Q4_K": 12, "Q6_K": 14}  # GGML's type numbers, as the kernels take them
MM_MAX_ROWS = 16  # rows up to which the block kernel beats widening the weights for a matmul
HUGE_PAGE = 2 << 20  # the size of a transparent huge page on x86_64
KERNEL_DTYPES = (torch.float32, torch.bfloat16)  # the activations the block kernels take


class GGUFLinear(nn.Module):
    """A Linear layer whose weight is a GGUF tensor's blocks: [out_features, blocks a row x block bytes]."""

    def __init__(self, blocks: torch.Tensor, block_type: int, in_features: int, bias: torch.Tensor | None,
                 ops: Any) -> None:
        super().__init__()
        self.register_buffer("blocks", blocks)
        self.register_buffer("bias", bias.float().contiguous() if bias is not None else None)  # the kernel's form
        self.block_type, self.in_features, self.out_features = block_type, in_features, blocks.shape[0]
        self.ops = ops

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if rows.shape[0] <= MM_MAX_ROWS and x.dtype in KERNEL_DTYPES:
            return Projection((self,))(x)[0]
        wide = torch.bfloat16 if x.dtype == torch.bfloat16 else torch.float32
        out = rows @ self.ops.dequant(self.blocks, self.block_type, self.in_features, wide).to(x.dtype).t()
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return out.reshape(*x.shape[:-1], self.out_features)


class Projection:
    """Linear layers of one input width applied to the same activations, or to `norm(x)` where an RMSNorm module is
    given. GGUF block layers on a few rows take one kernel call for all of it, which quantizes the activations once
    and spreads all their rows over the threads; its arguments are gathered here, once."""

    def __init__(self, layers: tuple[nn.Module, ...], norm: nn.Module | None = None) -> None:
        self.layers, self.norm = layers, norm
        self.ops = layers[0].ops if all(isinstance(layer, GGUFLinear) for layer in layers) else None
        if self.ops is not None:
            self.blocks = [layer.blocks for layer in layers]
            self.types = [layer.block_type for layer in layers]
            self.biases = [layer.bias for layer in layers]
            self.norm_args = (norm.weight, norm.variance_epsilon) if norm is not None else (None, 0.0)

    def __call__(self, x: torch.Tensor, gated: bool = False,
                 residual: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Each layer's output; `gated`: the one output silu(layers[0](x)) * layers[1](x); `residual`: added to the
        (one) output."""
        rows = x.reshape(-1, x.shape[-1])
        if self.ops is not None and rows.shape[0] <= MM_MAX_ROWS and x.dtype in KERNEL_DTYPES:
            outs = self.ops.mm_group(rows, self.blocks, self.types, self.biases, *self.norm_args, gated,
                                     residual.reshape(rows.shape[0], -1) if residual is not None else None)
            return [out.reshape(*x.shape[:-1], out.shape[-1]) for out in outs]
        if self.norm is not None:
            x = self.norm(x)
        outs = [layer(x) for layer in self.layers]
        if gated:
            outs = [F.silu(outs[0]) * outs[1]]
        if residual is not None:
            outs = [residual + outs[0]]
        return outs


def on_huge_pages(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Copies of CPU `tensors`, one after another (each on a 64-byte boundary), in one private anonymous mapping that
    the kernel is asked to back with 2 MB pages (transparent huge pages, MADV_HUGEPAGE) from a 2 MB boundary on;
    `tensors` themselves where that cannot be asked (no madvise here, or refused). A decode step streams every block
    once: on 4 KB pages each 4 KB is a new TLB entry and the hardware prefetcher stops at each page's end. The 1.5B's
    blocks stream about 7% faster on huge pages (measured on a 2-core AMD EPYC: 45.4 -> 48.5 GB/s)."""
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if advice is None or not tensors:
        return tensors
    spans = [-(-t.numel() * t.element_size() // 64) * 64 for t in tensors]
    arena = mmap.mmap(-1, sum(spans) + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        arena.madvise(advice)
    except OSError:
        arena.close()
        return tensors
    raw = torch.frombuffer(arena, dtype=torch.uint8)  # keeps the mapping alive as long as a view of it is
    offset, copies = -raw.data_ptr() % HUGE_PAGE, []
    for tensor, span in zip(tensors, spans):
        size = tensor.numel() * tensor.element_size()
        copy = raw[offset:offset + size].view(tensor.dtype).view(tensor.shape)
        copy.copy_(tensor)
        copies.append(copy)
        offset += span
    return copies


def block_tensors(linears: list[tuple[str, nn.Linear]], gguf: Path, config: Any, ops: Any) -> dict[str, torch.Tensor]:
    """Per layer `NAME.blocks` (uint8, the GGUF tensor's rows of blocks) and `NAME.type` (its GGML type), for every
    Linear layer whose weight is a Q4_K or Q6_K tensor of `gguf`, checked value for value: the widened blocks must
    equal the loaded weight. EngineError naming a layer that is not (another block type, a reordered tensor)."""
    import numpy as np

    tensors = {}
    for name, module, candidates in candidate_tensors(linears, gguf, config):
        weight = module.weight.detach().cpu()
        for tensor in candidates:
            block_type = BLOCK_TYPES[tensor.tensor_type.name]
            blocks = torch.from_numpy(np.array(tensor.data)).reshape(module.out_features, -1).contiguous()
            widened = ops.dequant(blocks, block_type, module.in_features, torch.float32).to(weight.dtype)
            if torch.equal(widened, weight):
                tensors[f"{name}.blocks"], tensors[f"{name}.type"] = blocks, torch.tensor([block_type])
                break
        else:
            raise EngineError(f"{gguf.name}: the blocks of {candidates[0].name} are not the loaded weights of {name}")
    return tensors


def candidate_tensors(linears: list[tuple[str, nn.Linear]], gguf: Path,
                      config: Any) -> list[tuple[str, nn.Linear, list]]:
    """Per Linear layer, the Q4_K/Q6_K tensors of `gguf` that may hold its weight (the LM head's may be the token
    embeddings); EngineError naming a layer that has none, read off the file's header before anything is built."""
    import gguf as gguf_py

    arch = next((key for key, value in gguf_py.MODEL_ARCH_NAMES.items() if value == config.model_type), None)
    if arch is None:
        raise EngineError(f"the GGUF block kernels do not know the architecture '{config.model_type}'")
    names = gguf_py.get_tensor_name_map(arch, config.num_hidden_layers)
    stored = {tensor.name: tensor for tensor in gguf_py.GGUFReader(str(gguf)).tensors}
    found = []
    for name, module in linears:
        keys = [f"{names.get_name(name)}.weight"] + (["token_embd.weight"] if name == "lm_head" else [])
        usable = [stored[k] for k in keys if k in stored and stored[k].tensor_type.name in BLOCK_TYPES
                  and tuple(int(n) for n in stored[k].shape) == (module.in_features, module.out_features)]
        if not usable:
            kinds = sorted({stored[k].tensor_type.name for k in keys if k in stored})
            raise EngineError(f"{gguf.name} holds {name} as {', '.join(kinds) or 'nothing'}; the block kernels run "
                              f"{' and '.join(BLOCK_TYPES)}")
        found.append((name, module, usable))
    return found
