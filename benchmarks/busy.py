"""Decode on a busy machine: time per token at 1K tokens of context (benchmarks.speed's measure), quiet and then with
one other process busy on a core (a Python loop that never sleeps), for the engine's thread policies: `auto` (each
forward on the cores the other processes leave free, engine.threads) and `all` (every forward on all of PyTorch's
threads, what the engine did before), and llama.cpp on the same GGUF under the same contention (where
llama-cpp-python is installed: `make peers`; in the configuration benchmarks.peer_tune found fastest per token, on
all the threads, as llama.cpp runs). Each measurement runs in its own process, one after another, the methods
alternated (ABBA over the rounds).

    python -m benchmarks.busy                                   # the default model, its default scheme, 2 rounds
    python -m benchmarks.busy --rounds 1 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from agentcache.cache_dir import models_dir
from agentcache.config import DEFAULT_MODEL
from benchmarks import speed
from benchmarks.prefix_reuse import token_stream
from engine import Engine, Request, load_model, registry
from engine.hardware import choose_dtype

POLICIES = ("auto", "all")
LLAMA = "llama.cpp"
BUSY = "while True:\n    pass\n"


def tpot_ms(lm: Any, threads: str) -> tuple[float, int]:
    """Median time per token of benchmarks.speed's decode measurement, and the engine's thread count at its end."""
    stream, mask = token_stream(lm, speed.CONTEXT), speed.no_eos(lm)
    Engine(lm, capacity_bytes=256 << 20, threads=threads).generate(Request([stream[:32]], max_tokens=2))  # warm-up
    times, count = [], 0
    for _ in range(speed.TPOT_RUNS):
        engine = Engine(lm, capacity_bytes=512 << 20, threads=threads)
        result = engine.generate(Request([stream[:speed.CONTEXT]], max_tokens=speed.REPLY + 1, logits_mask=mask))
        times.append(result.timings.tpot_s * 1000)
        count = engine.stats()["threads"]
    return statistics.median(times), count


def child(spec: str) -> dict[str, Any]:
    """MODEL,QUANT,DTYPE,POLICY,LOAD: one measurement in this process, LOAD 'quiet' or 'busy' (one busy process
    beside it for the whole measurement)."""
    name, quant, dtype, policy, load = spec.split(",")
    lm = load_model(name, dtype=dtype, cache_dir=models_dir(), quant=quant)
    peer = llama_peer(lm) if policy == LLAMA else None
    hog = subprocess.Popen([sys.executable, "-c", BUSY]) if load == "busy" else None
    try:
        ms, threads = (peer.tpot_ms(), torch.get_num_threads()) if peer else tpot_ms(lm, policy)
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    return {"tpot_ms_1k": ms, "threads": threads}


def llama_peer(lm: Any) -> speed.LlamaPeer:
    """llama.cpp on the model's GGUF in the configuration benchmarks.peer_tune found fastest per token here."""
    from benchmarks.peer_tune import best_configs
    from engine import registry

    config = best_configs(lm.name, tpot_only=True)[0]
    return speed.LlamaPeer(lm, registry.gguf_path(registry.find(lm.name), models_dir()), config)


def in_process(spec: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.busy", *speed.child_flags, "--child", spec]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=speed.REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"{spec}: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'failed'}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(name: str, rounds: int, console: Console) -> dict[str, Any]:
    dtype = choose_dtype("auto").name
    scheme = speed.in_process(f"{name},scheme,auto,{dtype}")["scheme"]
    methods = POLICIES + ((LLAMA,) if speed.llama_installed() and registry.find(name) is not None else ())
    runs: dict[str, dict[str, list]] = {p: {"quiet": [], "busy": [], "threads_busy": []} for p in methods}
    for number in range(rounds):
        order = methods if number % 2 == 0 else methods[::-1]
        for policy in order:
            for load in ("quiet", "busy"):
                console.print(f"{name}: round {number + 1}/{rounds}: threads {policy}, {load} ...")
                got = in_process(f"{name},{scheme},{dtype},{policy},{load}")
                runs[policy][load].append(got["tpot_ms_1k"])
                if load == "busy":
                    runs[policy]["threads_busy"].append(got["threads"])
    rows = []
    for policy in methods:
        quiet, busy = statistics.median(runs[policy]["quiet"]), statistics.median(runs[policy]["busy"])
        rows.append({"method": LLAMA if policy == LLAMA else "agentcache",
                     "threads": "all" if policy == LLAMA else policy, "tpot_quiet_ms": quiet, "tpot_busy_ms": busy,
                     "busy_ratio": busy / quiet, "threads_when_busy": runs[policy]["threads_busy"],
                     "rounds": {"quiet": runs[policy]["quiet"], "busy": runs[policy]["busy"]}})
    out = {"name": name, "scheme": f"{dtype} {scheme}", "rows": rows}
    if LLAMA in methods:
        out["ratio_to_llama_cpp"] = rows[0]["busy_ratio"] / rows[-1]["busy_ratio"]  # auto's slowdown over llama.cpp's
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run, not numbers")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        speed.use_quick_sizes()
    if args.child:
        print(json.dumps(child(args.child)))
        return {}
    console = Console(highlight=False)
    model = measure(args.model, args.rounds, console)
    table = Table("method", "threads", "ms/token @1k quiet", "with one core busy", "busy / quiet", "threads when busy",
                  title=f"{model['name']} ({model['scheme']}): decode beside one busy process")
    for row in model["rows"]:
        table.add_row(row["method"], row["threads"], f"{row['tpot_quiet_ms']:.1f}", f"{row['tpot_busy_ms']:.1f}",
                      f"{row['busy_ratio']:.2f}x", ", ".join(str(t) for t in row["threads_when_busy"]))
    return speed.report_model(console, table, model, args.json)


if __name__ == "__main__":
    main()
