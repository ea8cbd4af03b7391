"""llama.cpp at its best on this machine: its prefill, time per token and warm turn (benchmarks.speed's measurements,
each configuration in its own process) over every configuration of benchmarks.speed.llama_configs(): flash attention
off and on, micro-batches (n_ubatch) of 512 and 2,048 tokens, the weights mmap'ed or in anonymous memory, with
n_threads and n_threads_batch both set to the cores agentcache uses. The report names the best configuration per
metric, the binding's version and llama.cpp's system info line; benchmarks.speed_pairs then alternates agentcache with
those configurations.

    python -m benchmarks.peer_tune --json benchmarks/results/llama_cpp_tuning.json
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from agentcache.config import DEFAULT_MODEL
from benchmarks import speed
from benchmarks.speed_pairs import best_of, metrics
from engine.hardware import choose_dtype

TUNING = speed.REPO / "benchmarks" / "results" / "llama_cpp_tuning.json"


def llama_rows(name: str, configs: list[str], console: Console, label: str = "") -> list[dict[str, Any]]:
    """llama.cpp's row for model `name` in each configuration, each in its own process: its metrics
    (benchmarks.speed_pairs.metrics), configuration and build. Stops with one line where there is none."""
    dtype = choose_dtype("auto").name
    rows = []
    for config in configs:
        console.print(f"{name}: {label}llama.cpp {config} ...")
        row = speed.in_process(f"{name},llama.cpp@{config},none,{dtype}")["row"]
        if row is None:
            raise SystemExit(f"no llama.cpp row for {name}: llama-cpp-python is not installed (make peers), or the "
                             "model has no GGUF file")
        rows.append({"config": config, **metrics(row),
                     "build": {key: row[key] for key in ("version", "system_info", "build")}})
    return rows


def measure(name: str, configs: list[str], console: Console) -> dict[str, Any]:
    rows = llama_rows(name, configs, console)
    for row in rows:
        row["settings"] = speed.llama_settings(row["config"])
    best = {metric: best_of(rows, metric)["config"] for metric in ("tpot_ms_1k", "warm_turn_s", "prefill_long")}
    return {"name": name, "build": rows[0]["build"], "rows": rows, "best": best}


def best_configs(name: str, path: Path = TUNING, tpot_only: bool = False) -> list[str]:
    """The configurations a tuning report found best for some metric of model `name` (read from `path`; with
    `tpot_only`, the one fastest per token); llama.cpp's defaults (benchmarks.speed.LLAMA_DEFAULT) where there is no
    report for it."""
    import json

    if path.is_file():
        for model in json.loads(path.read_text()).get("models", []):
            if model["name"] == name:
                return [model["best"]["tpot_ms_1k"]] if tpot_only else list(dict.fromkeys(model["best"].values()))
    return [speed.LLAMA_DEFAULT]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--configs", default=",".join(speed.llama_configs()))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run, not numbers")
    args = parser.parse_args(argv)
    if args.quick:
        speed.use_quick_sizes()
    console = Console(highlight=False)
    model = measure(args.model, [c for c in args.configs.split(",") if c], console)
    table = Table("configuration", "ms/token @1k", "warm turn s", "prefill 2048 tok/s",
                  title=f"{model['name']}: llama.cpp {model['build']['version']} per configuration")
    for row in model["rows"]:
        marks = {metric: " (best)" if model["best"][metric] == row["config"] else "" for metric in model["best"]}
        table.add_row(row["config"], f"{row['tpot_ms_1k']:.1f}{marks['tpot_ms_1k']}",
                      f"{row['warm_turn_s']:.2f}{marks['warm_turn_s']}",
                      f"{row['prefill_long']:.0f}{marks['prefill_long']}")
    console.print(f"llama.cpp system info: {model['build']['system_info']}")
    return speed.report_model(console, table, model, args.json)


if __name__ == "__main__":
    main()
