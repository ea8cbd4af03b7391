"""Warm start from disk: time to first token of a new process's first request, with the disk tier vs without.

Each measurement is a separate process (model load excluded from the timing):
  writer  disk tier on, empty dir: prefix + suffix A (fills the disk tier)
  warm    disk tier on, the writer's dir: prefix + suffix B
  cold    disk tier off: prefix + suffix B
The warm process then sends prefix + suffix C: the same process's in-memory warm time, the floor for `warm`.

    python -m benchmarks.warm_start                      # 3,000-token prefix, 3 repeats, embedded model
    python -m benchmarks.warm_start --prefix 512 --repeats 1 --model random-tiny --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from agentcache.cache_dir import models_dir
from benchmarks.prefix_reuse import make_prompts, plain_ttft, token_stream
from benchmarks.report import write_json
from engine import Engine, Request, load_model
from engine.kv.disk_dir import stats as kv_stats

ROLES = ("writer", "warm", "cold")
PAGE_SIZE = 16
SUFFIX_TOKENS = 64
TARGET = 0.15
REPO = Path(__file__).resolve().parent.parent
NOTES = [
    "ttft_s: wall clock around Engine.generate(max_tokens=1) in a fresh process after the model is loaded and "
    "one 32-token forward has initialised torch; it includes reading pages from disk (warm) and writing new "
    "full pages through to disk (writer, warm).",
    "warm/cold is the target ratio (<= 0.15); writer/cold is the cost of write-through on a cold request; "
    "warm_memory/cold is the floor: the next request of the warm process, served from the device pool.",
    "bytes_per_token: page files on disk / tokens they hold; formula: layers x kv_heads x head_dim x 2 x dtype size.",
]


def child(args: argparse.Namespace) -> None:
    """One process, one timed request; prints a JSON record."""
    lm = load_model(args.model, cache_dir=models_dir())
    prompts = make_prompts(lm, args.prefix, SUFFIX_TOKENS, args.repeats + 1)  # the last suffix: the memory floor
    suffix = prompts.warmup_suffix if args.child == "writer" else prompts.timed_suffixes[args.index]
    engine = Engine(lm, page_size=PAGE_SIZE, capacity_bytes=1 << 30,
                    disk_dir=None if args.child == "cold" else args.dir)
    with torch.inference_mode():
        plain_ttft(lm.model, token_stream(lm, 32))
    start = time.perf_counter()
    result = engine.generate(Request([prompts.prefix, suffix], max_tokens=1))
    seconds = time.perf_counter() - start
    record = {"seconds": seconds, "engine_ttft_s": result.timings.ttft_s, "token": result.token_ids[0],
              "usage": result.usage.to_dict(), "rejected": result.trace.disk_rejected}
    if args.child == "warm":
        start = time.perf_counter()
        engine.generate(Request([prompts.prefix, prompts.timed_suffixes[-1]], max_tokens=1))
        record["memory_seconds"] = time.perf_counter() - start
    print(json.dumps(record))


def spawn(args: argparse.Namespace, role: str, kv: Path, index: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.warm_start", "--child", role, "--model", args.model,
           "--prefix", str(args.prefix), "--repeats", str(args.repeats), "--index", str(index), "--dir", str(kv)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{role} process failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def geometry(model: str) -> dict[str, Any]:
    lm = load_model(model, cache_dir=models_dir())
    size = torch.empty((), dtype=lm.dtype).element_size()
    return {"layers": lm.num_layers, "kv_heads": lm.kv_heads, "head_dim": lm.head_dim, "dtype": str(lm.dtype),
            "formula_bytes_per_token": lm.num_layers * lm.kv_heads * lm.head_dim * 2 * size}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {role: [] for role in ROLES}
    load_before = os.getloadavg()[0]
    disk: dict[str, Any] = {}
    for index in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            kv = Path(tmp) / "kv"
            for role in ROLES:
                runs[role].append(spawn(args, role, kv, index))
            disk = kv_stats(kv)
    med = {role: statistics.median(r["seconds"] for r in runs[role]) for role in ROLES}
    med["warm_memory"] = statistics.median(r["memory_seconds"] for r in runs["warm"])
    geo = geometry(args.model)
    per_token = disk["bytes_per_token"]
    return {
        "model": args.model, "prefix_tokens": args.prefix, "suffix_tokens": SUFFIX_TOKENS, "page_size": PAGE_SIZE,
        "repeats": args.repeats, "ttft_s": med, "runs": runs,
        "ratios": {"warm/cold": med["warm"] / med["cold"], "writer/cold": med["writer"] / med["cold"],
                   "warm_memory/cold": med["warm_memory"] / med["cold"]},
        "target_warm_over_cold": TARGET, "meets_target": med["warm"] / med["cold"] <= TARGET,
        "same_first_token": all(w["token"] == c["token"] for w, c in zip(runs["warm"], runs["cold"])),
        "disk": {"files": disk["files"], "bytes": disk["bytes"], "tokens": disk["tokens"],
                 "bytes_per_token": per_token, **geo,
                 "header_overhead": per_token / geo["formula_bytes_per_token"] - 1 if per_token else None},
        "settings": {"torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                     "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)]},  # other processes' noise
        "notes": NOTES,
    }


def table(report: dict[str, Any]) -> Table:
    t = Table(title=f"warm start, {report['prefix_tokens']}-token prefix, {report['model']}")
    t.add_column("measure")
    t.add_column("value", justify="right")
    for role in ROLES:
        cached = report["runs"][role][0]["usage"]
        t.add_row(f"{role} ttft (s)", f"{report['ttft_s'][role]:.3f}  (disk {cached['disk_tokens']} tokens)")
    t.add_row("warm ttft from memory, same process (s)", f"{report['ttft_s']['warm_memory']:.3f}")
    for name, value in report["ratios"].items():
        t.add_row(name, f"{value:.3f}")
    d = report["disk"]
    t.add_row("bytes on disk per token", f"{d['bytes_per_token']:.0f}")
    t.add_row("formula (layers x kv_heads x head_dim x 2 x dtype)", str(d["formula_bytes_per_token"]))
    t.add_row("header overhead", f"{100 * d['header_overhead']:.2f}%")
    t.add_row("same first token warm vs cold", str(report["same_first_token"]))
    return t


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--prefix", type=int, default=3000, help="prefix tokens")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path, help="write the report here")
    p.add_argument("--child", choices=ROLES, help=argparse.SUPPRESS)
    p.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child(args)
        return 0
    report = measure(args)
    console = Console(width=120)
    console.print(table(report))
    for note in NOTES:
        console.print(note, markup=False)
    write_json(args.json, report, console)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
