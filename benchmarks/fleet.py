"""Fleet: 16 agent sessions on 4 repositories at once, through vllm-router in front of two vLLM replicas whose KV
memory holds about half of the sessions' working set, under each routing policy; and on one replica with twice the
KV memory (the ceiling: what one machine with the fleet's memory keeps). Cached and prompt tokens and requests per
replica come from the replicas' own Prometheus counters (the difference across each run); time to first token from
the streamed replies.

The workload: 4 sessions per repository (examples/repo and benchmarks/repos' cachetools, tomli and itsdangerous, so
4 L1+L2 prefixes), each the agent loop in read-only mode on one question (its tool calls, up to --max-turns turns),
the default model. A seed shuffles the sessions' arrival order; they start --stagger seconds apart and then run at
once. Each run has its own cache salt, so no run reuses another's KV. The benchmark starts and stops its own
replicas (ports 8110-8113, state in .fleet-bench/), never the fleet `make fleet` started.

  round_robin     router round_robin, requests carry no routing key
  session         consistent_hash, routing key = the session (consistent hash of the session id)
  prefix          consistent_hash, routing key = the L1+L2 context id
  session_sticky  sticky_least_loaded (a new key goes to the least loaded replica, then stays), session keys
  prefix_sticky   sticky_least_loaded, prefix keys (a repository's sessions together, repositories balanced)
  cache_aware     vllm-router's cache_aware (its own prefix tree of the request texts), no key
  power_of_two    vllm-router's power_of_two (the less loaded of two random replicas), no key

    make install router .venv-vllm/.installed
    python -m benchmarks.fleet --seeds 3 --replica-kv-tokens 12928 --json benchmarks/results/fleet.json
"""

from __future__ import annotations

import argparse
import json
import math
import random
import secrets
import shutil
import statistics
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from agentcache import PROMPTS_DIR
from agentcache.agent import Agent
from agentcache.backends.openai import OpenAIBackend
from agentcache.cache_dir import models_dir
from agentcache.config import RunConfig, default_model
from agentcache.fleet import launch
from agentcache.fleet.status import replica_stats
from agentcache.records import requests_of
from agentcache.session import Session
from benchmarks.demo_builds import cpu_report
from benchmarks.report import write_json
from benchmarks.task_set import EXAMPLE, REPOS
from benchmarks.tasks import select
from layers import ToolRegistry

ROOT = Path(__file__).resolve().parent.parent
BLOCK_TOKENS = 128  # vLLM's CPU KV block
SUITE_QUESTIONS = {  # the task suite's questions, by repository
    "textstats": "where-split-sentences,syllables-of-banana,top-default,rounding-places",
    "cachetools": "ct-where-typedkey,ct-ttl-default,ct-timer-default,ct-rr-choice",
    "tomli": "tomli-where-match-to-datetime,tomli-parse-float-default,tomli-invalid-error,tomli-nesting-limit",
}
ITSDANGEROUS = (
    "Which exception does `TimestampSigner.unsign` raise when the signature is older than `max_age`? Answer with its "
    "name.",
    "Which hash function does `Signer` use by default? Answer with its name.",
    "In which file is the class `URLSafeSerializer` defined? Answer with its path.",
    "What is the default `salt` of `Serializer`? Answer with the value.",
)
POLICIES = {"round_robin": ("round_robin", "none"), "session": ("consistent_hash", "session"),
            "prefix": ("consistent_hash", "prefix"), "session_sticky": ("sticky_least_loaded", "session"),
            "prefix_sticky": ("sticky_least_loaded", "prefix"), "cache_aware": ("cache_aware", "none"),
            "power_of_two": ("power_of_two", "none")}
BUSIEST_LIMIT = 0.60  # the headline policy's busiest replica serves at most this share of requests


@dataclass(frozen=True, slots=True)
class SessionSpec:
    repo: str  # the repository's name
    path: Path  # its snapshot (copied per run)
    question: str


def sessions() -> list[SessionSpec]:
    """The 16 sessions, in a fixed order (a seed shuffles it)."""
    specs = [SessionSpec(task.repo.name if task.repo != EXAMPLE else "textstats", task.repo, task.text)
             for ids in SUITE_QUESTIONS.values() for task in select(ids, None)]
    return specs + [SessionSpec("itsdangerous", REPOS / "itsdangerous", question) for question in ITSDANGEROUS]


def arrival_order(seed: int) -> list[SessionSpec]:
    order = sessions()
    random.Random(seed).shuffle(order)
    return order


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (nearest rank) of `values`."""
    if not values:
        return None
    ranked = sorted(values)
    return ranked[max(0, math.ceil(q / 100 * len(ranked)) - 1)]


def run_sessions(base_url: str, model: str, routing: str, order: list[SessionSpec], work: Path, stagger_s: float,
                 max_turns: int) -> tuple[list[dict[str, Any]], float]:
    """Every session of `order` on its own thread, started `stagger_s` apart, each through the agent loop on a copy
    of its repository (one copy per repository and run); per session what its requests cost, and the wall time."""
    registry = ToolRegistry.from_dir(PROMPTS_DIR / "tools")
    salt = secrets.token_hex(8)
    copies = {}
    for spec in order:
        if spec.repo not in copies:
            copies[spec.repo] = Path(shutil.copytree(spec.path, work / spec.repo, ignore=shutil.ignore_patterns(
                ".agentcache")))
    results: list[dict[str, Any] | None] = [None] * len(order)
    errors: list[BaseException] = []

    def one(index: int, spec: SessionSpec) -> None:
        time.sleep(index * stagger_s)
        repo = copies[spec.repo]
        config = RunConfig(model=model, mode="read-only", max_turns=max_turns, disk_cache=False, routing=routing,
                           salt=salt)
        session = Session.create(repo)
        backend = OpenAIBackend(base_url, model, use_contexts=False, stream=True)
        try:
            outcome = Agent(repo, backend, config, session, registry=registry).run(spec.question)
        except BaseException as exc:  # reported after the run
            errors.append(exc)
            return
        requests = [{"prompt_tokens": r.usage.prompt_tokens, "cached_tokens": r.usage.cached_tokens,
                     "completion_tokens": r.usage.completion_tokens, "ttft_s": r.timings.get("ttft_s"),
                     "timings_from": r.trace.get("timings_from")} for r in requests_of(session.records())]
        results[index] = {"repo": spec.repo, "question": spec.question, "reason": outcome.reason,
                          "turns": outcome.turns, "answer": outcome.answer, "requests": requests}

    threads = [threading.Thread(target=one, args=(i, spec)) for i, spec in enumerate(order)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        traceback.print_exception(errors[0])
        raise RuntimeError(f"{len(errors)} sessions failed: {errors[0]}")
    return [r for r in results if r is not None], wall


def counters(url: str) -> dict[str, int]:
    """The replica's cumulative prompt and cached tokens and requests (its own counters)."""
    stats = replica_stats(url)
    return {"prompt_tokens": stats.prompt_tokens, "cached_tokens": stats.cached_tokens, "requests": stats.requests}


def measured(replicas: list[str], base_url: str, model: str, routing: str, order: list[SessionSpec],
             stagger_s: float, max_turns: int) -> dict[str, Any]:
    """One run of the workload against `base_url`, and what it cost by the replicas' counters; the sessions' own
    usage sums beside them (an independent count of the same tokens)."""
    before = {url: counters(url) for url in replicas}
    with tempfile.TemporaryDirectory(prefix="fleet-") as work:
        done, wall = run_sessions(base_url, model, routing, order, Path(work), stagger_s, max_turns)
    after = {url: counters(url) for url in replicas}
    delta = {url: {k: after[url][k] - before[url][k] for k in after[url]} for url in replicas}
    cached, prompt = (sum(d[name] for d in delta.values()) for name in ("cached_tokens", "prompt_tokens"))
    requests = [r for s in done for r in s["requests"]]
    ttfts = [r["ttft_s"] for r in requests if r["ttft_s"] is not None]
    return {"cached_tokens": cached, "prompt_tokens": prompt, "prefill_tokens": prompt - cached,
            "requests_per_replica": {url: d["requests"] for url, d in delta.items()},
            "ttft_p50_s": percentile(ttfts, 50), "ttft_p95_s": percentile(ttfts, 95), "wall_s": round(wall, 2),
            "client": {"requests": len(requests), "prompt_tokens": sum(r["prompt_tokens"] for r in requests),
                       "cached_tokens": sum(r["cached_tokens"] for r in requests),
                       "completion_tokens": sum(r["completion_tokens"] for r in requests),
                       "ttft_from_stream": sum(1 for r in requests if r["timings_from"] == "stream")},
            "sessions": [{k: s[k] for k in ("repo", "reason", "turns", "answer")} for s in done]}


def busiest_share(run: dict[str, Any]) -> float:
    counts = list(run["requests_per_replica"].values())
    return max(counts) / sum(counts) if sum(counts) else 0.0


def cached_share(run: dict[str, Any]) -> float:
    """Cached over prompt tokens: what a run kept, whatever its number of requests (the model's replies, and with
    them the turns a session takes, differ a little between runs)."""
    return run["cached_tokens"] / run["prompt_tokens"] if run["prompt_tokens"] else 0.0


def median_of(runs: list[dict[str, Any]], name: str) -> float | None:
    values = [r[name] for r in runs if r.get(name) is not None]
    return statistics.median(values) if values else None


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """Per policy the medians over seeds and the targets' ratios; the headline: the policy with the most cached tokens
    among those whose busiest replica serves at most 60% of requests."""
    by_policy: dict[str, dict[str, Any]] = {}
    for policy in POLICIES:
        runs = [r for r in report["runs"] if r["policy"] == policy]
        if runs:
            by_policy[policy] = {"seeds": len(runs), **{name: median_of(runs, name) for name in (
                "cached_tokens", "prompt_tokens", "prefill_tokens", "ttft_p50_s", "ttft_p95_s", "wall_s")},
                "busiest_share": statistics.median(busiest_share(r) for r in runs),
                "cached_share": statistics.median(cached_share(r) for r in runs)}
    ceiling = report["ceiling"].get("cached_tokens")
    shares = [cached_share(r) for r in report["ceiling"].get("runs", [])]
    ceiling_share = statistics.median(shares) if shares else None
    base = by_policy.get("round_robin")
    for name, row in by_policy.items():
        row["of_ceiling"] = row["cached_tokens"] / ceiling if ceiling else None
        row["share_of_ceiling_share"] = row["cached_share"] / ceiling_share if ceiling_share else None
        row["x_round_robin_cached"] = row["cached_tokens"] / base["cached_tokens"] if base and base[
            "cached_tokens"] else None
        row["x_round_robin_ttft_p95"] = row["ttft_p95_s"] / base["ttft_p95_s"] if base and base["ttft_p95_s"] else None
    balanced = [name for name, row in by_policy.items() if row["busiest_share"] <= BUSIEST_LIMIT]
    headline = max(balanced, key=lambda name: by_policy[name]["cached_tokens"], default=None)
    return {"policies": by_policy, "headline": headline, "ceiling_cached_share": ceiling_share}


def start_replicas(model: str, state: Path, cores: list[int | str], kv_blocks: int, max_model_len: int,
                   router: bool) -> dict[str, Any]:
    from engine.hardware import choose_dtype
    from engine.model import converted_model_dir

    dtype = choose_dtype("auto").dtype
    spec = launch.FleetSpec(ROOT / ".venv-vllm/bin/vllm", ROOT / ".venv-router/bin/vllm-router",
                            converted_model_dir(model, dtype, models_dir()), model,
                            str(dtype).removeprefix("torch."), state, cores=cores,
                            first_port=8111 if router else 8113, router_port=8110, router_metrics_port=29010,
                            max_model_len=max_model_len, kv_blocks=kv_blocks)
    return launch.up(spec, router=router)


def load_report(path: Path | None) -> dict[str, Any] | None:
    if path is None or not path.is_file():
        return None
    return json.loads(path.read_text())


def table(report: dict[str, Any], console: Console) -> None:
    rows = Table("policy", "seeds", "cached", "prompt", "prefill", "cached share", "of ceiling", "x rr cached",
                 "busiest", "ttft p50 s", "ttft p95 s", "x rr p95", "wall s",
                 title=f"fleet: {report['workload']['sessions']} sessions, {report['workload']['repositories']} "
                       f"repositories, 2 replicas of {report['workload']['model']}")

    def f(value: Any, spec: str = ".2f") -> str:
        return "-" if value is None else format(value, spec)

    for name, row in report["summary"]["policies"].items():
        rows.add_row(name, str(row["seeds"]), f(row["cached_tokens"], ",.0f"), f(row["prompt_tokens"], ",.0f"),
                     f(row["prefill_tokens"], ",.0f"), f(row["cached_share"]), f(row["of_ceiling"]),
                     f(row["x_round_robin_cached"]),
                     f(row["busiest_share"], ".0%"), f(row["ttft_p50_s"], ".1f"), f(row["ttft_p95_s"], ".1f"),
                     f(row["x_round_robin_ttft_p95"]), f(row["wall_s"], ".0f"))
    ceiling = report["ceiling"]
    if ceiling.get("cached_tokens") is not None:
        rows.add_row("ceiling (1 replica, 2x KV)", str(len(ceiling["runs"])), f(ceiling["cached_tokens"], ",.0f"),
                     f(median_of(ceiling["runs"], "prompt_tokens"), ",.0f"),
                     f(median_of(ceiling["runs"], "prefill_tokens"), ",.0f"),
                     f(report["summary"]["ceiling_cached_share"]), "1.00", "", "100%",
                     f(median_of(ceiling["runs"], "ttft_p50_s"), ".1f"),
                     f(median_of(ceiling["runs"], "ttft_p95_s"), ".1f"), "", f(median_of(ceiling["runs"], "wall_s"),
                                                                               ".0f"))
    console.print(rows)
    console.print(f"headline (best cached tokens with the busiest replica <= {BUSIEST_LIMIT:.0%} of requests): "
                  f"{report['summary']['headline']}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=default_model())
    parser.add_argument("--seeds", type=int, default=3, help="arrival orders (seeds 0..N-1)")
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--phase", choices=("fleet", "ceiling", "both"), default="both")
    parser.add_argument("--replica-kv-tokens", type=int, default=16384,
                        help="KV memory per replica in tokens (whole 128-token blocks); the ceiling has twice it")
    parser.add_argument("--max-model-len", type=int, default=12288)
    parser.add_argument("--max-turns", type=int, default=4)
    parser.add_argument("--stagger", type=float, default=2.0, help="seconds between session starts")
    parser.add_argument("--state", type=Path, default=ROOT / ".fleet-bench")
    parser.add_argument("--json", type=Path, default=None, help="written after every run; runs in it are kept")
    args = parser.parse_args(argv)
    console = Console(highlight=False, width=160)
    blocks = math.ceil(args.replica_kv_tokens / BLOCK_TOKENS)
    workload = {"model": args.model, "sessions": len(sessions()), "repositories": len({s.repo for s in sessions()}),
                "max_turns": args.max_turns, "stagger_s": args.stagger, "mode": "read-only",
                "replicas": 2, "replica_kv_tokens": blocks * BLOCK_TOKENS, "ceiling_kv_tokens": 2 * blocks *
                BLOCK_TOKENS, "max_model_len": args.max_model_len, "cores_per_replica": 1, "ceiling_cores": 2,
                "cpu": cpu_report()}
    report = load_report(args.json) or {"workload": workload, "ceiling": {"runs": []}, "runs": []}
    for key, what in (("replica_kv_tokens", "another KV size"), ("cpu", "another machine")):
        if report["workload"].get(key) != workload[key]:
            raise SystemExit(f"{args.json} holds runs with {what}; write to another file")
    state = args.state.resolve()

    def save() -> None:
        ceiling_runs = report["ceiling"]["runs"]
        report["ceiling"]["cached_tokens"] = median_of(ceiling_runs, "cached_tokens")
        computed = [r["prefill_tokens"] + r["client"]["completion_tokens"] for r in ceiling_runs]
        report["workload"]["working_set_tokens"] = statistics.median(computed) if computed else None
        if computed:  # what one replica holds of the working set (the ceiling recomputes nothing it has seen)
            report["workload"]["replica_share_of_working_set"] = round(
                workload["replica_kv_tokens"] / statistics.median(computed), 3)
        report["summary"] = summary(report)
        write_json(args.json, report, console)

    done = {(r["policy"], r["seed"]) for r in report["runs"]} | {("ceiling", r["seed"]) for r in
                                                                  report["ceiling"]["runs"]}
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    if args.phase in ("ceiling", "both"):
        fleet = start_replicas(args.model, state, ["0-1"], 2 * blocks, args.max_model_len, router=False)
        try:
            url = next(iter(fleet["replicas"]))
            for seed in range(args.seeds):
                if ("ceiling", seed) in done:
                    continue
                console.print(f"ceiling, seed {seed} ...")
                run = measured([url], url + "/v1", args.model, "session", arrival_order(seed), args.stagger,
                               args.max_turns)
                report["ceiling"]["runs"].append({"policy": "ceiling", "seed": seed, **run})
                save()
        finally:
            launch.down(state)
    if args.phase in ("fleet", "both"):
        fleet = start_replicas(args.model, state, [0, 1], blocks, args.max_model_len, router=True)
        try:
            replicas = list(fleet["replicas"])
            for seed in range(args.seeds):
                rotated = policies[seed % len(policies):] + policies[:seed % len(policies)]  # no policy always first
                for policy in rotated:
                    if (policy, seed) in done:
                        continue
                    router_policy, routing = POLICIES[policy]
                    console.print(f"{policy}, seed {seed}: router {router_policy}, routing key {routing} ...")
                    launch.restart_router(state, router_policy)
                    run = measured(replicas, fleet["router_url"] + "/v1", args.model, routing, arrival_order(seed),
                                   args.stagger, args.max_turns)
                    report["runs"].append({"policy": policy, "seed": seed, **run})
                    save()
                    console.print(f"  cached {run['cached_tokens']:,} of {run['prompt_tokens']:,}, requests "
                                  f"{' / '.join(map(str, run['requests_per_replica'].values()))}, ttft p95 "
                                  f"{run['ttft_p95_s']:.1f} s, wall {run['wall_s']:.0f} s")
        finally:
            launch.down(state)
    save()
    table(report, console)
    return report


if __name__ == "__main__":
    main()
