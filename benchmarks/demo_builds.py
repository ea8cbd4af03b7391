"""How fragile the demo is: `make demo`'s task on each build of the GGUF block kernels and with int8 weights, graded
strictly (benchmarks.task_checks.DefinedIn).

Each configuration runs in a fresh process on a fresh copy of examples/repo, with the disk tier off, through the
same code as `agentcache run` (agentcache.wiring.run_task). A build is the kernels compiled for one gcc -march, as
tests/engine/gguf/test_blocks.py compiles them: the process asks engine.gguf.build.kernels for that target
instead of this CPU's.

    python -m benchmarks.demo_builds                                    # every configuration
    python -m benchmarks.demo_builds --configs native,plain --json out.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.report import write_json
from benchmarks.task_set import EXAMPLE, fresh_copy

TASK = "In which file is the function split_sentences defined? Answer with its path."
OVERRIDES = {"mode": "read-only", "max_turns": 4, "disk_cache": False}  # the Makefile's demo, disk tier off
CHECKED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
ANSWER_CHARS = 200
RUN_TIMEOUT_S = 3600


@dataclass(frozen=True, slots=True)
class Config:
    name: str
    march: str | None  # gcc -march the block kernels are built for; None: the run loads no block kernels
    quant: str | None  # --quant; None: the demo's default (auto: the GGUF's blocks where the file allows)


CONFIGS = (
    Config("native", "native", None),
    Config("avx2", "haswell", None),  # the AVX2 build the tests compile
    Config("plain", "x86-64", None),  # the portable build the tests compile: no AVX
    Config("int8", None, "int8"),  # torchao int8 weights, no block kernels
)
NOTES = [
    "Each configuration ran once, greedy, in its own process on a fresh copy of examples/repo with the disk tier "
    "off; a run passes only on a final answer naming the one module that defines split_sentences.",
    "wall s: the whole run as `agentcache run` does it, loading the model included (and int8's one-time quantization "
    "where its weights were not kept yet); the kernels are built before the clock starts. The machine's cores were "
    "shared with other work, so wall times are rough.",
]


def kernel_flags(march: str | None) -> str:
    from engine.gguf.build import CFLAGS

    return " ".join([*CFLAGS, f"-march={march}"]) if march else "none (no block kernels)"


def cpu_report() -> dict[str, Any]:
    from engine.hardware import cpu_flags

    flags = cpu_flags()
    found = {flag: flag in flags for flag in CHECKED_FLAGS}
    kind = ("AMX" if found["amx_bf16"] else "AVX-512" if found["avx512f"] else "AVX2 only" if found["avx2"]
            else "no AVX2")
    return {"model": cpu_model(), "kind": kind, **found}


def cpu_model() -> str | None:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), None)


def run_config(config: Config, work: Path) -> dict[str, Any]:
    """The demo's task once, in this process, on the kernels built for `config.march`."""
    from agentcache import wiring
    from agentcache.cache_dir import models_dir
    from agentcache.records import requests_of
    from agentcache.session import Session
    from benchmarks.task_checks import DefinedIn
    from engine.gguf import build

    loaded: dict[str, Any] = {}
    built_for = build.kernels
    if config.march is not None:
        def kernels(build_root: Path, march: str = "native") -> Any:
            ops = built_for(build_root, config.march)
            loaded["kernels"] = Path(ops.__file__).name
            return ops
        build.kernels = kernels
        built_for(models_dir() / "kernels", config.march)  # built now, not on the clock
    load = wiring.local_engine

    def local_engine(run_config: Any) -> Any:
        model, engine = load(run_config)
        loaded["model"] = model
        return model, engine
    wiring.local_engine = local_engine

    repo = work / config.name
    fresh_copy(EXAMPLE, repo)
    overrides = {**OVERRIDES, "quant": config.quant}
    start = time.perf_counter()
    summary = wiring.run_task(repo, TASK, overrides, None, on_line=lambda line: line and print(line, file=sys.stderr))
    wall_s = time.perf_counter() - start
    requests = requests_of(Session.open(repo, summary["session_id"]).records())
    seen = [r.tool_result["output"] for r in requests if r.tool_result]  # what the agent's tool calls showed it
    verdict = DefinedIn("split_sentences")(summary["answer"], EXAMPLE, seen)
    model = loaded["model"]
    return {
        "build": config.name, "flags": kernel_flags(config.march) if model.quant == "gguf" else kernel_flags(None),
        "kernels": loaded.get("kernels"), "model": model.name, "quant": model.quant, "dtype": str(model.dtype),
        "passed": verdict.passed, "check": verdict.detail, "answer": (summary["answer"] or "")[:ANSWER_CHARS],
        "reason": summary["reason"], "turns": summary["turns"], "wall_s": round(wall_s, 1),
    }


def run_fresh(config: Config, work: Path, console: Console) -> dict[str, Any]:
    """`config` in a fresh process: no kernels, weights or KV pages left in memory by another configuration."""
    out = work / f"{config.name}.json"
    console.print(f"{config.name}: running ...")
    done = subprocess.run([sys.executable, "-m", "benchmarks.demo_builds", "--one", config.name, "--work", str(work),
                           "--out", str(out)], timeout=RUN_TIMEOUT_S, check=False)
    if done.returncode != 0 or not out.is_file():
        return {"build": config.name, "flags": kernel_flags(config.march), "quant": config.quant, "passed": False,
                "check": f"the run failed (exit {done.returncode})", "answer": "", "turns": None, "wall_s": None}
    return json.loads(out.read_text())


def runs_table(report: dict[str, Any]) -> Table:
    cpu = report["cpu"]
    table = Table(title=f"make demo's task, per build ({cpu['model']}, {cpu['kind']})")
    for column in ("build", "kernel flags", "quant", "dtype", "pass", "check", "turns", "wall s", "answer"):
        table.add_column(column, overflow="fold")
    for run in report["runs"]:
        table.add_row(run["build"], run["flags"], str(run["quant"]), run.get("dtype", "-"),
                      "pass" if run["passed"] else "FAIL", run["check"], str(run["turns"]), str(run["wall_s"]),
                      run["answer"])
    return table


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    names = [config.name for config in CONFIGS]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default=",".join(names), help=f"comma-separated, of {', '.join(names)}")
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    parser.add_argument("--one", choices=names, help=argparse.SUPPRESS)  # a child process: one configuration
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    if unknown := sorted(set(args.configs) - set(names)):
        parser.error(f"unknown configuration(s) {', '.join(unknown)} (known: {', '.join(names)})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    by_name = {config.name: config for config in CONFIGS}
    if args.one:
        args.out.write_text(json.dumps(run_config(by_name[args.one], args.work)) + "\n")
        return 0
    console = Console(width=160)
    with tempfile.TemporaryDirectory(prefix="agentcache-demo-builds-") as tmp:
        runs = [run_fresh(by_name[name], Path(tmp), console) for name in args.configs]
    report = {"cpu": cpu_report(), "task": TASK, "settings": OVERRIDES, "runs": runs, "notes": NOTES}
    console.print(runs_table(report))
    write_json(args.json, report, console)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
