"""Where a decode step's time goes, against the memory floor (docs/engine.md, "Against the memory floor").

The floor is the bytes a step must read (every weight once: the GGUF blocks and what is not on blocks) over the
machine's measured read bandwidth (a float32 sum over 1 GiB, on the engine's threads). The step is the engine's
own, at 1,024 tokens of context on the default model: its time per token on the fused path (every layer in one C++
call), then the same steps on the layer-by-layer path with every call into the C++ kernels timed: the projections
(the blocks' matrix products, which stream the weights), attention, the rotary embedding, and the rest (Python, the
embedding, sampling, the KV copy). Then the projections' own rate two ways: from memory (all the model's blocks, as
a step reads them) and from cache (one layer's blocks, read again and again): where the two are close, the
products are bound by their arithmetic on this CPU, not by memory.

The model runs in the activation dtype users get (`--dtype auto`: bfloat16 where the CPU has AVX-512 BF16 or AMX,
float32 otherwise); `--dtype float32` measures the float32 path.

    python -m benchmarks.floor --json benchmarks/results/floor-avx2.json   # named for the CPU it ran on
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from agentcache.cache_dir import models_dir
from agentcache.config import DEFAULT_MODEL
from benchmarks.prefix_reuse import token_stream
from benchmarks.speed import CONTEXT, REPLY, machine, no_eos
from engine import Engine, Request, load_model
from engine.gguf.blocks import GGUFLinear, Projection

READ_BYTES = 1 << 30
CACHED_BYTES = 8 << 20  # a weight this size stays in a server CPU's last-level cache between calls
RUNS = 5


def read_gb_s() -> float:
    """Median GB/s of a float32 sum over 1 GiB (read once per run, on PyTorch's threads)."""
    x = torch.ones(READ_BYTES // 4)
    x.sum()
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        x.sum()
        times.append(time.perf_counter() - start)
    return READ_BYTES / statistics.median(times) / 1e9


def step_bytes(model: nn.Module) -> dict[str, int]:
    """What a decode step reads of the weights: every GGUF layer's blocks, every other Linear's weight, the norms;
    the embedding is one row a token (not counted)."""
    blocks = sum(m.blocks.numel() * m.blocks.element_size() for m in model.modules() if isinstance(m, GGUFLinear))
    linear = sum(m.weight.numel() * m.weight.element_size() for m in model.modules() if isinstance(m, nn.Linear))
    norms = sum(p.numel() * p.element_size() for name, p in model.named_parameters() if "norm" in name)
    return {"blocks": blocks, "other_linear": linear, "norms": norms, "total": blocks + linear + norms}


class Timed:
    """The kernels module with its calls timed by name (every other attribute passed through)."""

    def __init__(self, ops: Any) -> None:
        self.ops, self.seconds = ops, {"mm_group": 0.0, "attention": 0.0, "rope_": 0.0}

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.ops, name)
        if name not in self.seconds:
            return target

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return target(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - start

        return timed


def decode_ms(lm: Any, stream: list[int]) -> float:
    """The engine's median time per token over RUNS replies of REPLY tokens at CONTEXT tokens of context."""
    mask = no_eos(lm)
    times = [Engine(lm, capacity_bytes=512 << 20).generate(
        Request([stream[:CONTEXT]], max_tokens=REPLY + 1, logits_mask=mask)).timings.tpot_s for _ in range(RUNS)]
    return statistics.median(times) * 1000


def split(lm: Any, stream: list[int]) -> dict[str, float]:
    """Per token, on the layer-by-layer path: ms in each kind of kernel call and in the rest."""
    engine = Engine(lm, capacity_bytes=512 << 20)
    step = engine.scheduler.runner.lean
    timed = Timed(step.ops)
    projections = [p for layer in step.layers for p in (layer.qkv, layer.o, layer.gate_up, layer.down)] + [step.head]
    fused, step.fused, step.ops = step.fused, None, timed
    for p in projections:
        p.ops = timed
    try:
        engine.generate(Request([stream[:CONTEXT]], max_tokens=2, logits_mask=no_eos(lm)))  # warm, not counted
        timed.seconds = dict.fromkeys(timed.seconds, 0.0)
        before = engine.stats()["decode_steps"]
        result = engine.generate(Request([stream[:CONTEXT]], max_tokens=REPLY + 1, logits_mask=no_eos(lm)))
        steps = engine.stats()["decode_steps"] - before
        total = (result.timings.total_s - result.timings.ttft_s) / steps
    finally:
        step.fused, step.ops = fused, timed.ops
        for p in projections:
            p.ops = timed.ops
    parts = {name: seconds / steps * 1000 for name, seconds in timed.seconds.items()}
    return {"step_ms": total * 1000, "projections_ms": parts["mm_group"], "attention_ms": parts["attention"],
            "rope_ms": parts["rope_"], "other_ms": total * 1000 - sum(parts.values())}


def product_rates(lm: Any) -> dict[str, float]:
    """GB/s of blocks the products run at for one activation row: all the model's blocks once (from memory), and the
    largest single weight of at most CACHED_BYTES again and again (from cache)."""
    layers = [m for m in lm.model.modules() if isinstance(m, GGUFLinear)]
    groups = [(Projection((m,)), m.blocks.numel(), m.in_features) for m in layers]

    def run(chosen: list[tuple[Projection, int, int]], repeat: int) -> float:
        inputs = {width: torch.randn(1, width, dtype=lm.dtype) for _, _, width in chosen}
        times = []
        for _ in range(RUNS):
            start = time.perf_counter()
            for _ in range(repeat):
                for projection, _, width in chosen:
                    projection(inputs[width])
            times.append(time.perf_counter() - start)
        return sum(size for _, size, _ in chosen) * repeat / statistics.median(times) / 1e9

    memory = run(groups, 1)
    one = [max((g for g in groups if g[1] <= CACHED_BYTES), key=lambda g: g[1])]  # the largest that stays in cache
    return {"from_memory_gb_s": memory, "from_cache_gb_s": run(one, 100),
            "cached_bytes": sum(size for _, size, _ in one)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--dtype", default="auto", help="activation dtype: auto (what users get), float32, bfloat16")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    console = Console(highlight=False)
    lm = load_model(args.model, dtype=args.dtype, cache_dir=models_dir(), quant="auto")
    if not any(isinstance(m, GGUFLinear) for m in lm.model.modules()):
        raise SystemExit(f"error: {args.model} does not run on GGUF blocks here (quant {lm.quant})")
    stream = token_stream(lm, CONTEXT)
    with torch.inference_mode():
        bandwidth = read_gb_s()
        sizes = step_bytes(lm.model)
        fused = decode_ms(lm, stream)
        parts = split(lm, stream)
        rates = product_rates(lm)
    floor_ms = sizes["total"] / bandwidth / 1e6
    report = {"machine": machine(), "model": args.model, "quant": lm.quant, "dtype": str(lm.dtype),
              "read_gb_s": round(bandwidth, 2), "step_bytes": sizes, "floor_ms": round(floor_ms, 2),
              "fused_step_ms": round(fused, 2), "fused_over_floor": round(fused / floor_ms, 3),
              "layer_by_layer": {k: round(v, 2) for k, v in parts.items()},
              "projections_floor_ms": round(sizes["blocks"] / bandwidth / 1e6, 2),
              "products": {k: round(v, 2) for k, v in rates.items()}}
    console.print(f"read bandwidth {bandwidth:.1f} GB/s; a step reads {sizes['total'] / 1e9:.3f} GB: floor "
                  f"{floor_ms:.1f} ms. Fused step {fused:.1f} ms = {fused / floor_ms:.2f}x the floor.")
    console.print("layer by layer: " + ", ".join(f"{k} {v:.1f}" for k, v in parts.items()))
    console.print(f"products: {rates['from_memory_gb_s']:.1f} GB/s of blocks from memory, "
                  f"{rates['from_cache_gb_s']:.1f} GB/s from cache")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
