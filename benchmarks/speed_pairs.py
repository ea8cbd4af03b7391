"""The default scheme against llama.cpp on the same GGUF, alternated: this machine's speed drifts by 20% or more over
the minutes between two rows of benchmarks.speed, enough to move a ratio near 1.0 either way. Here each round measures
agentcache's row (the scheme `auto` loads) and llama.cpp's, in ABBA order (odd rounds agentcache first), each in its
own process as benchmarks.speed does (the same prefill, time per token and warm turn measurements), llama.cpp in the
configurations benchmarks.peer_tune found best (each metric the best of them in the round), and the report gives
each round's ratios and the ratios of the medians over the rounds. With --baseline, the other side of each round is agentcache's row run from an
earlier checkout of this repository (the same scheme): a change's speed before and after, alternated.

    python -m benchmarks.speed_pairs                              # the default model, 4 rounds
    python -m benchmarks.speed_pairs --rounds 2 --json out.json
    python -m benchmarks.speed_pairs --baseline ../old-checkout --quant int8   # this tree against an earlier one
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from agentcache.config import DEFAULT_MODEL
from benchmarks import speed
from engine.hardware import choose_dtype

METRICS = ("tpot_ms_1k", "warm_turn_s", "prefill_long")  # times (lower is better), then a throughput


def metrics(row: dict[str, Any]) -> dict[str, float]:
    return {"tpot_ms_1k": row["tpot_ms_1k"], "warm_turn_s": row["warm_turn_s"],
            "prefill_long": row["prefill_tok_s"][str(max(speed.PREFILLS))]}


def best_of(rows: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """The row best in `metric` (of METRICS): the lowest time, the highest prefill throughput."""
    return max(rows, key=lambda row: row[metric]) if metric == "prefill_long" else min(rows, key=lambda row: row[metric])


def ratios(ours: dict[str, float], theirs: dict[str, float]) -> dict[str, float]:
    """agentcache / the other side: <1 is faster for the times, >1 for prefill throughput."""
    return {"tpot": ours["tpot_ms_1k"] / theirs["tpot_ms_1k"], "warm_turn": ours["warm_turn_s"] / theirs["warm_turn_s"],
            "prefill_long": ours["prefill_long"] / theirs["prefill_long"]}


def commit(checkout: Path) -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def measure(name: str, rounds: int, console: Console, scheme: str | None = None,
            baseline: Path | None = None, peer_configs: list[str] | None = None) -> dict[str, Any]:
    """`rounds` rounds of agentcache's row and the other side's, in ABBA order (odd rounds agentcache first, even
    rounds the other side first): llama.cpp's on the model's GGUF in each of `peer_configs` (default: those
    benchmarks.peer_tune found best, else llama.cpp's defaults), its metrics each the best of its configurations in
    the round; or with `baseline` agentcache's row run from that checkout."""
    from benchmarks.peer_tune import best_configs, llama_rows

    dtype = choose_dtype("auto").name
    scheme = scheme or speed.in_process(f"{name},scheme,auto,{dtype}")["scheme"]
    peer = "baseline" if baseline is not None else "llama.cpp"
    peer_configs = peer_configs or best_configs(name)
    pairs = []
    for number in range(1, rounds + 1):
        def ours() -> dict[str, float]:
            console.print(f"{name}: round {number}/{rounds}: agentcache {dtype} {scheme} ...")
            return metrics(speed.in_process(f"{name},agentcache-speed,{scheme},{dtype}")["row"])

        def theirs() -> dict[str, Any]:
            if baseline is not None:
                console.print(f"{name}: round {number}/{rounds}: baseline ...")
                return metrics(speed.in_process(f"{name},agentcache-speed,{scheme},{dtype}", checkout=baseline)["row"])
            rows = llama_rows(name, peer_configs, console, f"round {number}/{rounds}: ")
            return {**{m: best_of(rows, m)[m] for m in METRICS}, "build": rows[0]["build"],
                    "configs": {m: best_of(rows, m)["config"] for m in METRICS}}

        first = "agentcache" if number % 2 else peer
        got = {first: ours() if first == "agentcache" else theirs()}
        got.update({"agentcache": ours()} if first == peer else {peer: theirs()})
        pairs.append({"agentcache": got["agentcache"], peer: got[peer], "first": first,
                      "ratios": ratios(got["agentcache"], got[peer])})
    medians = {side: {m: statistics.median(p[side][m] for p in pairs) for m in METRICS}
               for side in ("agentcache", peer)}
    out = {"name": name, "scheme": f"{dtype} {scheme}", "peer": peer, "rounds": pairs, "medians": medians,
           "ratios": ratios(medians["agentcache"], medians[peer])}
    if baseline is not None:
        out["commits"] = {"agentcache": commit(speed.REPO), "baseline": commit(baseline)}
    else:
        out["peer_configs"] = peer_configs
        out["peer_build"] = next(iter(pairs))[peer].get("build") if pairs else None
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run, not numbers")
    parser.add_argument("--quant", default=None, help="the scheme to measure (default: what auto loads here)")
    parser.add_argument("--peer-configs", default=None,
                        help="llama.cpp configurations, comma-separated (default: benchmarks.peer_tune's best)")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="an earlier checkout of this repository: its agentcache row is the other side")
    args = parser.parse_args(argv)
    if args.quick:
        speed.use_quick_sizes()
    console = Console(highlight=False)
    configs = [c for c in args.peer_configs.split(",") if c] if args.peer_configs else None
    model = measure(args.model, args.rounds, console, args.quant, args.baseline, configs)
    peer = model["peer"]
    table = Table("round", f"ms/token @1k (ours / {peer})", "warm turn s", "prefill tok/s", "ratios: tpot, warm, "
                  "prefill", title=f"{model['name']}: agentcache ({model['scheme']}) against {peer}, alternated")
    for number, pair in enumerate(model["rounds"] + [model["medians"] | {"ratios": model["ratios"]}], start=1):
        ours, theirs, r = pair["agentcache"], pair[peer], pair["ratios"]
        table.add_row(str(number) if number <= len(model["rounds"]) else "median",
                      f"{ours['tpot_ms_1k']:.1f} / {theirs['tpot_ms_1k']:.1f}",
                      f"{ours['warm_turn_s']:.2f} / {theirs['warm_turn_s']:.2f}",
                      f"{ours['prefill_long']:.0f} / {theirs['prefill_long']:.0f}",
                      f"{r['tpot']:.2f}x, {r['warm_turn']:.2f}x, {r['prefill_long']:.2f}x")
    return speed.report_model(console, table, model, args.json)


if __name__ == "__main__":
    main()
