"""torch.compile of the lean decode step against the eager step: the seconds the first request takes (compiling
included) and the time per output token after 1,024 tokens of context, each variant in its own process.

  eager      the engine as it ships
  compile    torch.compile(dynamic=True) of the lean step (inductor; on a CPU it needs a C compiler)
  freezing   the same with inductor's freezing on (weights folded as constants, its weight-only int8 patterns)

    python -m benchmarks.decode_compile [--model NAME] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from agentcache.cache_dir import models_dir
from agentcache.config import DEFAULT_MODEL
from benchmarks.prefix_reuse import token_stream
from benchmarks.report import write_json
from benchmarks.speed import no_eos
from engine import Engine, Request, load_model

REPO = Path(__file__).resolve().parent.parent
VARIANTS = ("eager", "compile", "freezing")
CONTEXT, REPLY = 1024, 32


def measure(model: str, variant: str) -> dict[str, Any]:
    lm = load_model(model, dtype="auto", cache_dir=models_dir(), quant="auto")
    stream, mask = token_stream(lm, CONTEXT + 64), no_eos(lm)
    engine = Engine(lm, capacity_bytes=512 << 20)
    runner = engine.scheduler.runner
    if variant != "eager":
        if runner.lean is None:
            raise SystemExit(f"{model} has no lean decode step to compile")
        import torch._inductor.config as inductor

        inductor.freezing = variant == "freezing"
        runner.lean.forward = torch.compile(runner.lean.forward, dynamic=True)
    start = time.perf_counter()
    engine.generate(Request([stream[:32]], max_tokens=4))
    first = time.perf_counter() - start
    result = engine.generate(Request([stream[:CONTEXT]], max_tokens=REPLY + 1, logits_mask=mask))
    return {"variant": variant, "first_request_s": first, "tpot_ms_1k": result.timings.tpot_s * 1000,
            "dtype": str(lm.dtype).removeprefix("torch."), "quant": lm.quant}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.model, args.child)))
        return {}
    console = Console(highlight=False)
    compiler = shutil.which("cc") or shutil.which("gcc")
    console.print(f"C compiler: {compiler or 'none (inductor cannot compile for the CPU)'}")
    rows = []
    for variant in VARIANTS if compiler or torch.cuda.is_available() else ("eager",):
        console.print(f"{variant} ...")
        proc = subprocess.run([sys.executable, "-m", "benchmarks.decode_compile", "--model", args.model, "--child",
                               variant], capture_output=True, text=True, cwd=REPO)
        if proc.returncode != 0:
            rows.append({"variant": variant, "error": (proc.stderr.strip().splitlines() or ["failed"])[-1]})
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    report = {"model": args.model, "compiler": compiler, "cuda": torch.cuda.is_available(), "rows": rows}
    table = Table("variant", "first request s", "ms per token @1k", "vs eager", title=args.model)
    eager = next((r for r in rows if r["variant"] == "eager" and "error" not in r), None)
    for r in rows:
        if "error" in r:
            table.add_row(r["variant"], "failed", r["error"][:60], "")
            continue
        ratio = f"{r['tpot_ms_1k'] / eager['tpot_ms_1k']:.2f}x" if eager else ""
        table.add_row(r["variant"], f"{r['first_request_s']:.1f}", f"{r['tpot_ms_1k']:.1f}", ratio)
    console.print(table)
    write_json(args.json, report, console)
    return report


if __name__ == "__main__":
    main()
