"""Weight-only quantization of a loaded model's Linear layers (the LM head included), and which kernel runs it here.

int8: one symmetric scale per output row, computed by torchao. A step with few rows (decode) runs PyTorch's
`_weight_int8pack_mm` kernel where it exists for the device (it reads a quarter of float32's bytes, half of
bfloat16's); a step with many rows (prefill) widens the weights to the activations' dtype and runs a plain matmul,
which on a CPU beats the int8 kernel at that size. Where the kernel is missing, every step takes the plain path
(said in the reason).
int4: torchao's grouped int4 weight-only tensors: on a CPU its tinygemm CPU layout, on CUDA its tile-packed layout.
gguf: the model's GGUF blocks themselves (Q4_K and Q6_K), run by the C++ kernels of engine.gguf (CPU only).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from engine.errors import EngineError
from engine.registry import sha256_of

QUANT_CHOICES = ("auto", "none", "int8", "int4", "gguf")
TORCHAO_INSTALL = "pip install torchao==0.18.0"
ALIGN = 64  # bytes: a cache line, and what PyTorch's CPU allocator gives
PACK_MAX_ROWS = 16  # rows up to which the int8 kernel beats widening the weights (measured on a 2-core AVX-512 CPU)
INT4_GROUPS = (128, 64, 32)  # group sizes tried for int4, largest first: the first that divides every input width


@dataclass(frozen=True, slots=True)
class QuantChoice:
    scheme: str
    reason: str  # which kernel runs it here, or why none could
    kernels: Any = None  # gguf: the built extension, whose attention the loader may also give the model


class Int8Linear(nn.Module):
    """A Linear layer with int8 weights and one scale per output row."""

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, packed: bool) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("scale", scale)
        self.register_buffer("bias", bias)
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.packed = packed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if self.packed and rows.shape[0] <= PACK_MAX_ROWS:
            out = torch.ops.aten._weight_int8pack_mm(rows.contiguous(), self.weight, self.scale.to(x.dtype))
        else:
            out = (rows @ self.weight.to(x.dtype).t()) * self.scale.to(x.dtype)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)


def quantize(model: nn.Module, scheme: str, device: torch.device, dtype: torch.dtype,
             store: Path | None = None, gguf: Callable[[], Path] | None = None) -> QuantChoice:
    """Replace the model's Linear layers by `scheme`'s in place; 'none' leaves the model as it is; 'auto' is
    auto_scheme's choice. With `store` (a folder kept for the model's quantized weights) int8 weights and GGUF blocks
    are kept there once computed and, verified by sha256, reused; `gguf` gives the model's GGUF file (registry
    models), which the gguf scheme reads its blocks from."""
    if scheme not in QUANT_CHOICES:
        raise EngineError(f"unknown quant '{scheme}' (known: {', '.join(QUANT_CHOICES)})")
    linears = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    fallback = ""
    if scheme in ("auto", "gguf"):
        try:
            return _gguf(model, linears, device, store, gguf)
        except EngineError as exc:
            if scheme == "gguf":
                raise
            fallback = f" (GGUF blocks: {exc})"
    packed = int8_kernel_runs(device, dtype) if scheme in ("auto", "int8") else False
    if scheme == "auto":
        scheme = auto_scheme(device, packed)
    if scheme == "none":
        return QuantChoice("none", "unquantized weights" + fallback)
    try:
        import torchao.quantization  # noqa: F401
    except ImportError:
        raise EngineError(f"--quant {scheme} needs torchao: {TORCHAO_INSTALL}") from None
    if scheme == "int8":
        tensors = kept_tensors(store, "int8", lambda: int8_tensors(linears))
        for name, module in linears:
            weight, scale = tensors[f"{name}.weight"].to(device), tensors[f"{name}.scale"].to(device, dtype)
            bias = module.bias.detach() if module.bias is not None else None
            _replace(model, name, Int8Linear(weight, scale, bias, packed))
        kernel = "_weight_int8pack_mm for decode, widened weights for prefill" if packed else \
            f"widened weights (PyTorch's int8 kernel does not run on {device.type} with {_name(dtype)})"
        return QuantChoice("int8", f"int8 per-row weights, {kernel}{fallback}")
    return _int4(model, linears, device, dtype)


def auto_scheme(device: torch.device, int8_kernel: bool) -> str:
    """What `auto` means where the GGUF block kernels do not run for the model: int8 on a CPU where PyTorch's int8
    kernel runs (decode there is bound by reading the weights), none elsewhere. (Where they run, auto is gguf.)"""
    return "int8" if device.type == "cpu" and int8_kernel else "none"


def kept_tensors(store: Path | None, stem: str,
                 compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """`compute()`'s tensors, kept in `store` as STEM.safetensors with its sha256 beside it: read from there when the
    file matches its recorded sha256, else computed (and kept)."""
    path = store / f"{stem}.safetensors" if store is not None else None
    digest = path.with_suffix(".sha256") if path is not None else None
    if path is not None and path.is_file() and digest.is_file() and sha256_of(path) == digest.read_text().strip():
        return {name: aligned(tensor) for name, tensor in load_file(str(path)).items()}
    tensors = compute()
    if path is not None:
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        save_file(tensors, str(tmp))
        digest.write_text(sha256_of(tmp) + "\n")
        tmp.replace(path)
    return tensors


def aligned(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor at an address a multiple of ALIGN (copied if it is not): a safetensors file places its tensors one
    after the other, and PyTorch's int8 kernel with AVX-512 crashed on int8 weights read at an address 40 bytes past
    one (the 0.5B's int8 weights, bfloat16, on an AVX-512 BF16 CPU)."""
    return tensor if tensor.data_ptr() % ALIGN == 0 else tensor.clone()


def int8_tensors(linears: list[tuple[str, nn.Linear]]) -> dict[str, torch.Tensor]:
    """Per layer `NAME.weight` (int8) and `NAME.scale` (one per output row), computed by torchao."""
    from torchao.quantization import PerRow
    from torchao.quantization.quantize_.workflows.int8.int8_tensor import Int8Tensor

    tensors = {}
    for name, module in linears:
        quantized = Int8Tensor.from_hp(module.weight.detach().float(), granularity=PerRow())
        tensors[f"{name}.weight"] = quantized.qdata.contiguous().cpu()
        tensors[f"{name}.scale"] = quantized.scale.reshape(-1).float().contiguous().cpu()
    return tensors


def _gguf(model: nn.Module, linears: list[tuple[str, nn.Linear]], device: torch.device, store: Path | None,
          gguf: Callable[[], Path] | None) -> QuantChoice:
    """Every Linear layer on its GGUF blocks (engine.gguf.blocks), or EngineError saying why not. The choice carries
    the built kernels: the loader gives the model their attention too (engine.model.load_model)."""
    from engine.gguf import blocks as gguf_blocks
    from engine.gguf.build import kernels

    if device.type != "cpu":
        raise EngineError(f"the GGUF block kernels run on a CPU, not {device.type}")
    if gguf is None or store is None:
        raise EngineError("the model has no GGUF file (registry models have one)")
    unsupported = store / "gguf_blocks.unsupported"  # the file's verdict, kept: the file does not change
    if unsupported.is_file():
        raise EngineError(unsupported.read_text().strip())

    def compute() -> dict[str, torch.Tensor]:
        path = gguf()
        try:  # the file's block types, read off its header before anything is built
            gguf_blocks.candidate_tensors(linears, path, model.config)
        except EngineError as exc:
            unsupported.write_text(f"{exc}\n")
            raise
        return gguf_blocks.block_tensors(linears, path, model.config, kernels(store.parent / "kernels"))

    tensors = kept_tensors(store, "gguf_blocks", compute)
    ops = kernels(store.parent / "kernels")
    blocks = gguf_blocks.on_huge_pages([tensors.pop(f"{name}.blocks") for name, _ in linears])
    kinds = {}
    for (name, module), layer_blocks in zip(linears, blocks):
        block_type = int(tensors[f"{name}.type"][0])
        bias = module.bias.detach() if module.bias is not None else None
        _replace(model, name, gguf_blocks.GGUFLinear(layer_blocks, block_type, module.in_features, bias, ops))
        kinds[block_type] = kinds.get(block_type, 0) + 1
    names = {number: kind for kind, number in gguf_blocks.BLOCK_TYPES.items()}
    counted = ", ".join(f"{count} {names[number]}" for number, count in sorted(kinds.items()))
    return QuantChoice("gguf", f"the GGUF's own blocks ({counted} layers), C++ block kernels for decode, "
                               f"widened blocks for prefill", ops)


def int8_kernel_runs(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether PyTorch's int8 weight kernel runs here for activations of `dtype` (tried on a tiny input)."""
    try:
        x = torch.ones(1, 32, dtype=dtype, device=device)
        weight = torch.ones(8, 32, dtype=torch.int8, device=device)
        out = torch.ops.aten._weight_int8pack_mm(x, weight, torch.ones(8, dtype=dtype, device=device))
        return bool(torch.allclose(out.float(), torch.full((1, 8), 32.0, device=device)))
    except (RuntimeError, AttributeError, NotImplementedError):
        return False


def _int4(model: nn.Module, linears: list[tuple[str, nn.Linear]], device: torch.device,
          dtype: torch.dtype) -> QuantChoice:
    from torchao.quantization import quantize_

    if dtype != torch.bfloat16:
        raise EngineError(f"--quant int4 runs with bfloat16 activations (torchao's int4 kernels); this model is "
                          f"{_name(dtype)}: add --dtype bfloat16, or use --quant int8")
    widths = {module.in_features for _, module in linears}
    group = next((g for g in INT4_GROUPS if all(w % g == 0 for w in widths)), None)
    if group is None:
        raise EngineError(f"--quant int4: no group size in {INT4_GROUPS} divides the layer widths {sorted(widths)}")
    if device.type == "cuda":
        from torchao.quantization import Int4WeightOnlyConfig
        config, kernel = Int4WeightOnlyConfig(group_size=group, int4_packing_format="tile_packed_to_4d"), "tinygemm"
    else:
        from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig
        config, kernel = PrototypeInt4WeightOnlyConfig(group_size=group), "_weight_int4pack_mm_for_cpu"
    try:
        quantize_(model, config, filter_fn=lambda module, _: isinstance(module, nn.Linear))
        probe = linears[0][1]
        probe(torch.zeros(1, probe.in_features, dtype=dtype, device=device))
    except (RuntimeError, NotImplementedError, AssertionError) as exc:
        raise EngineError(f"--quant int4 does not run on {device.type} here ({exc}); use --quant int8") from None
    return QuantChoice("int4", f"int4 weights in groups of {group}, torchao's {kernel} kernel")


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")

