"""Fan-out: 8 agents over one shared prefix, each with its own short task, run (a) sequentially with no
cache, (b) sequentially on one engine with its prefix cache, (c) concurrently from 8 threads on one engine
(cache + batched decode); wall time, prefill tokens computed, and decode throughput, in one run.

    python -m benchmarks.fanout                          # embedded model, 3000-token prefix, 8 agents, 32 tokens
    python -m benchmarks.fanout --prefix 3000 --output 64 --json benchmarks/results/fanout.json
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from rich.console import Console
from rich.table import Table

from agentcache.cache_dir import models_dir
from benchmarks.prefix_reuse import token_stream
from benchmarks.report import write_json
from engine import Engine, EngineError, LoadedModel, Request, Result, load_model

MODES = ("a_sequential_no_cache", "b_sequential_cache", "c_concurrent_batched")
TASKS = ("list the public functions", "find one bug", "summarize the design", "name the data structures",
         "suggest a test", "explain the error handling", "describe the inputs", "rate the readability")
PAGE_SIZE = 16
NOTES = [
    "Every agent's prompt is the same prefix (the repo's own files, tokenized) plus its own task suffix.",
    "EOS is disabled with a logits mask that forbids the model's EOS ids, so every agent decodes exactly "
    "--output tokens and the three modes do the same decode work.",
    "a: a fresh Engine (empty pool) per agent, agents one after another; b: one Engine, agents one after "
    "another; c: one fresh Engine, all agents submitted at once from their own threads.",
    "decode_tokens_per_s: tokens after each agent's first (the first comes out of prefill) divided by the "
    "length of the union of the agents' decode intervals (first token -> done).",
]


@dataclass(slots=True)
class Timed:
    result: Result
    start: float  # perf_counter when generate() was called

    @property
    def decode_interval(self) -> tuple[float, float]:
        return self.start + self.result.timings.ttft_s, self.start + self.result.timings.total_s


def agent_prompts(lm: LoadedModel, prefix_tokens: int, agents: int) -> list[list[list[int]]]:
    prefix = token_stream(lm, prefix_tokens)
    suffixes = []
    for i in range(agents):
        task = f"\n\nAgent {i}: {TASKS[i % len(TASKS)]} in the files above. Answer in one line."
        if lm.tokenizer is None:
            suffixes.append([3 + (ord(c) + 7 * i) % (lm.config.vocab_size - 3) for c in task])
        else:
            suffixes.append(lm.tokenizer.encode(task, add_special_tokens=False))
    return [[prefix, suffix] for suffix in suffixes]


def no_eos_mask(lm: LoadedModel) -> torch.Tensor:
    allowed = torch.ones(lm.config.vocab_size, dtype=torch.bool)
    allowed[list(lm.eos_token_ids)] = False
    return allowed


def timed_generate(engine: Engine, request: Request) -> Timed:
    start = time.perf_counter()
    return Timed(engine.generate(request), start)


def run_mode(mode: str, lm: LoadedModel, requests: list[Request], capacity_bytes: int) -> tuple[list[Timed], float]:
    start = time.perf_counter()
    if mode == "a_sequential_no_cache":
        timed = [timed_generate(Engine(lm, PAGE_SIZE, capacity_bytes), r) for r in requests]
    elif mode == "b_sequential_cache":
        engine = Engine(lm, PAGE_SIZE, capacity_bytes)
        timed = [timed_generate(engine, r) for r in requests]
    else:
        engine = Engine(lm, PAGE_SIZE, capacity_bytes, max_running=len(requests))
        slots: list[Timed | None] = [None] * len(requests)
        threads = [threading.Thread(target=lambda i=i: slots.__setitem__(i, timed_generate(engine, requests[i])))
                   for i in range(len(requests))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if any(s is None for s in slots):
            raise EngineError("an agent failed in the concurrent run")
        timed = slots
    return timed, time.perf_counter() - start


def union_seconds(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for lo, hi in sorted(intervals):
        if hi > end:
            total += hi - max(lo, end)
            end = hi
    return total


def mode_record(timed: list[Timed], wall: float) -> dict[str, Any]:
    usages = [t.result.usage for t in timed]
    decode_tokens = sum(u.completion_tokens - 1 for u in usages)
    decode_s = union_seconds([t.decode_interval for t in timed])
    return {"wall_s": round(wall, 3), "prompt_tokens": sum(u.prompt_tokens for u in usages),
            "cached_tokens": sum(u.cached_tokens for u in usages),
            "prefill_computed_tokens": sum(u.computed_tokens for u in usages),
            "completion_tokens": sum(u.completion_tokens for u in usages), "decode_s": round(decode_s, 3),
            "decode_tokens_per_s": round(decode_tokens / decode_s, 2) if decode_s > 0 else None}


def run(args: argparse.Namespace) -> dict[str, Any]:
    lm = load_model(args.model, cache_dir=models_dir())
    prompts = agent_prompts(lm, args.prefix, args.agents)
    mask = no_eos_mask(lm)
    requests = [Request(p, max_tokens=args.output, logits_mask=lambda _ids: mask) for p in prompts]
    Engine(lm, PAGE_SIZE, args.capacity_mb << 20).generate(Request([prompts[0][1]], max_tokens=2))  # warm up
    load_before = os.getloadavg()[0]
    modes, outputs = {}, {}
    for mode in MODES:
        timed, wall = run_mode(mode, lm, requests, args.capacity_mb << 20)
        modes[mode] = mode_record(timed, wall)
        outputs[mode] = [t.result.token_ids for t in timed]
    a, b, c = (modes[m] for m in MODES)
    ratios = {"c_wall/a_wall": round(c["wall_s"] / a["wall_s"], 3),
              "c_decode_tps/b_decode_tps": round(c["decode_tokens_per_s"] / b["decode_tokens_per_s"], 3)}
    targets = {"c_wall/a_wall <= 0.5": ratios["c_wall/a_wall"] <= 0.5,
               "c_decode_tps/b_decode_tps >= 1.5": ratios["c_decode_tps/b_decode_tps"] >= 1.5}
    same = {m: sum(x == y for x, y in zip(outputs[m], outputs[MODES[0]])) for m in MODES[1:]}
    settings = {"prefix_tokens": args.prefix, "agents": args.agents, "output_tokens": args.output,
                "suffix_tokens": [len(p[1]) for p in prompts], "page_size": PAGE_SIZE,
                "capacity_mb": args.capacity_mb, "torch": torch.__version__, "transformers": transformers.__version__,
                "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    return {"model": lm.name, "modes": modes, "ratios": ratios, "targets_met": targets,
            "greedy_outputs_equal_to_a": same, "settings": settings, "notes": NOTES}


def results_table(report: dict[str, Any]) -> Table:
    table = Table(title=f"fan-out: {report['settings']['agents']} agents, {report['settings']['prefix_tokens']}-token "
                        f"shared prefix, {report['settings']['output_tokens']} output tokens each ({report['model']})")
    for column in ("mode", "wall s", "prefill computed", "cached", "decode tok/s", "outputs = a"):
        table.add_column(column, justify="left" if column == "mode" else "right")
    for mode, rec in report["modes"].items():
        same = report["greedy_outputs_equal_to_a"].get(mode, report["settings"]["agents"])
        table.add_row(mode, f"{rec['wall_s']:.2f}", str(rec["prefill_computed_tokens"]), str(rec["cached_tokens"]),
                      f"{rec['decode_tokens_per_s']:.1f}", f"{same}/{report['settings']['agents']}")
    return table


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fanout", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="embedded (default), random-tiny, a local HF dir or hub id")
    parser.add_argument("--prefix", type=int, default=3000, help="shared prefix tokens (default 3000)")
    parser.add_argument("--agents", type=int, default=8, help="agents (default 8)")
    parser.add_argument("--output", type=int, default=32, help="tokens each agent decodes, EOS disabled (default 32)")
    parser.add_argument("--capacity-mb", type=int, default=2048, help="KV pool per engine in MiB (default 2048)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON to this path")
    args = parser.parse_args(argv)
    if min(args.prefix, args.agents, args.output, args.capacity_mb) < 1:
        parser.error("--prefix, --agents, --output and --capacity-mb must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console, errors = Console(), Console(stderr=True)
    if not console.is_terminal:
        console = Console(width=140)
    try:
        report = run(args)
    except EngineError as exc:
        errors.print(f"[red]error:[/red] {exc}")
        return 1
    console.print(results_table(report))
    for name, value in report["ratios"].items():
        console.print(f"{name} = {value}")
    for name, met in report["targets_met"].items():
        console.print(f"target {name}: {'met' if met else 'NOT met'}")
    write_json(args.json, report, console)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
