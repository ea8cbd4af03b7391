"""Quantization quality, teacher-forced: each scheme's next-token logits from the engine's own decode step, against
float32 unquantized weights at the same positions on the same inputs.

Greedy agreement (benchmarks.speed) counts a reply's tokens until the first flipped near-tie, so one flip early in a
reply ends the count and the rest of the reply no longer has the same inputs. Here every position counts on its own:
for each of the 50 prompts of benchmarks.speed (chat turns on examples/repo's files), the prompt's last 16 tokens
are fed one at a time through the lean decode step (each scheme's decode kernels) on top of a prefill of the rest,
and each step's logits are compared with float32's from one plain forward over the whole prompt:
  top1_agreement   share of the 800 positions where the scheme's most likely next token is float32's
  mean_kl          mean KL(float32 || scheme) over those positions, in nats

The unquantized model in the run's dtype (bfloat16 where the CPU has it) is a row too: what the dtype alone moves.
Each quantized row is also compared with that row, position by position (`vs_unquantized`: the same two measures):
its greedy agreement with the unquantized model on the same inputs, which is what llama.cpp's KL-divergence tool
reports as "same top p" against the unquantized model.

    python -m benchmarks.quant_quality                       # the default model, every scheme
    python -m benchmarks.quant_quality --model smollm2-135m --quants none,int8 --json out.json
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from transformers import DynamicCache

from agentcache.cache_dir import models_dir
from agentcache.config import DEFAULT_MODEL
from benchmarks.report import write_json
from benchmarks.speed import agreement_prompts, machine
from engine import load_model
from engine.decode_step import lean_step
from engine.errors import EngineError
from engine.hardware import choose_dtype
from engine.model import LoadedModel, output_cache, with_cache
from engine.quant import QUANT_CHOICES

POSITIONS = 16


class Appended:
    """The decode step's KV for one sequence: the prefill's cache, each step's new token appended."""

    def __init__(self, cache: DynamicCache) -> None:
        self.layers = [(layer.keys, layer.values) for layer in cache.layers]

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        old_keys, old_values = self.layers[layer_idx]
        self.layers[layer_idx] = (torch.cat([old_keys, keys], dim=2), torch.cat([old_values, values], dim=2))
        return self.layers[layer_idx]


def prompts_of(lm: LoadedModel, count: int) -> list[list[int]]:
    return [lm.tokenizer.encode(prompt) for prompt in agreement_prompts(lm)[:count]]


def float32_logits(lm: LoadedModel, prompts: list[list[int]]) -> list[torch.Tensor]:
    """Per prompt, float32 logits [POSITIONS, vocab] for its last POSITIONS tokens, from one forward."""
    with torch.inference_mode():
        return [lm.model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -POSITIONS - 1:-1].float()
                for ids in prompts]


def decoded_logits(lm: LoadedModel, prompts: list[list[int]]) -> list[torch.Tensor]:
    """Per prompt, the lean decode step's logits for its last POSITIONS tokens, fed one at a time after a prefill."""
    step, out = lean_step(lm.model), []
    if step is None:
        raise EngineError(f"{lm.name} has no lean decode step")
    with torch.inference_mode():
        for ids in prompts:
            start = len(ids) - POSITIONS - 1
            prefill = lm.model(input_ids=torch.tensor([ids[:start]]), **with_cache(lm.model, DynamicCache()),
                               use_cache=True, logits_to_keep=1)
            cache = Appended(output_cache(prefill))
            out.append(torch.stack([step.forward(torch.tensor([[ids[n]]]), torch.tensor([[n]]), cache, None)[0].float()
                                    for n in range(start, len(ids) - 1)]))
    return out


def compare(reference: list[torch.Tensor], other: list[torch.Tensor]) -> dict[str, float]:
    positions = sum(len(r) for r in reference)
    same = sum(int((r.argmax(-1) == o.argmax(-1)).sum()) for r, o in zip(reference, other))
    # per position; a sum within float rounding of 0 can come out a hair below it
    kl = sum(float(F.kl_div(o.log_softmax(-1), r.log_softmax(-1), log_target=True, reduction="none").sum(-1)
                   .clamp(min=0).sum()) for r, o in zip(reference, other))
    return {"top1_agreement": same / positions, "mean_kl": kl / positions}


def measure(name: str, quants: list[str], count: int, console: Console) -> dict[str, Any]:
    dtype = choose_dtype("auto").name
    console.print(f"{name}: float32 reference ...")
    reference_model = load_model(name, dtype="float32", cache_dir=models_dir(), quant="none")
    prompts = prompts_of(reference_model, count)
    reference = float32_logits(reference_model, prompts)
    del reference_model
    rows, skipped, unquantized = [], {}, None
    for quant in quants:
        console.print(f"{name}: {dtype} {quant} ...")
        try:
            lm = load_model(name, dtype=dtype, cache_dir=models_dir(), quant=quant)
        except EngineError as exc:  # a scheme the model cannot run: said, skipped
            skipped[quant] = str(exc)
            continue
        logits = decoded_logits(lm, prompts)
        row = {"quant": lm.quant, "dtype": dtype, **compare(reference, logits)}
        if lm.quant == "none":
            unquantized = logits
        elif unquantized is not None:
            row["vs_unquantized"] = compare(unquantized, logits)
        rows.append(row)
        del lm
    result = {"name": name, "prompts": count, "positions": POSITIONS, "rows": rows}
    if skipped:
        result["skipped"] = skipped
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--quants", default=",".join(q for q in QUANT_CHOICES if q != "auto"))
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    console = Console(highlight=False)
    report = {"machine": machine(),
              "models": [measure(args.model, args.quants.split(","), args.prompts, console)]}
    for model in report["models"]:
        table = Table("quant", "dtype", "top-1 agreement with float32", "mean KL (nats)",
                      "top-1 agreement with unquantized", "mean KL vs unquantized",
                      title=f"{model['name']}: {model['prompts']} prompts x {model['positions']} decode steps")
        for row in model["rows"]:
            versus = row.get("vs_unquantized")
            table.add_row(row["quant"], row["dtype"], f"{row['top1_agreement']:.4f}", f"{row['mean_kl']:.5f}",
                          f"{versus['top1_agreement']:.4f}" if versus else "",
                          f"{versus['mean_kl']:.5f}" if versus else "")
        console.print(table)
        for quant, why in model.get("skipped", {}).items():
            console.print(f"{quant} skipped: {why}")
    write_json(args.json, report, console)
    return report


if __name__ == "__main__":
    main()
