"""Fleet: the fan-out script through a router in front of the replicas `make fleet` started, in four modes, and
on one replica alone as the reference. Cached and prompt tokens and requests per replica come from the replicas'
own Prometheus counters (the difference across each run).

The script: 8 agents in 2 groups of 4 forks, each group on its own L1+L2 prefix (the coder's and the reviewer's
role over examples/repo), 3 turns each (the task, then two follow-ups after the model's own reply), all 8 at
once. Each run has its own cache salt, so no run reuses another's KV.
  round_robin   router policy round_robin, requests carry no routing key
  session       consistent_hash, routing key = the session lineage (a fork keeps its parent's)
  prefix        consistent_hash, routing key = the L1+L2 context id
  session_sticky  sticky_least_loaded (a new key goes to the least loaded replica, then stays), session keys

    make fleet FLEET_MODEL=smollm2-135m
    python -m benchmarks.fleet --json benchmarks/results/fleet.json
"""

from __future__ import annotations

import argparse
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from agentcache import PROMPTS_DIR
from agentcache.backends import GenSettings
from agentcache.backends.openai import OpenAIBackend
from agentcache.fleet import launch
from agentcache.fleet.status import replica_stats
from benchmarks.report import write_json
from layers import AssistantMessage, Context, ToolRegistry, UserInput, build_prefix

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "repo"
GROUPS = {"coder": "Which function counts words in this repository?",
          "reviewer": "Review textstats/stats.py for one problem."}
FORKS = ("Answer in one line.", "Name the file first.", "Be brief.", "Quote one line of code.")
FOLLOW_UPS = ("Say more about that.", "Now summarise your answer in five words.")
TURNS = 3
MODES = {"round_robin": ("round_robin", "none"), "session": ("consistent_hash", "session"),
         "prefix": ("consistent_hash", "prefix"), "session_sticky": ("sticky_least_loaded", "session")}


def counters(url: str) -> dict[str, int]:
    """The replica's cumulative prompt and cached tokens and requests (its own counters)."""
    stats = replica_stats(url)
    return {"prompt_tokens": stats.prompt_tokens, "cached_tokens": stats.cached_tokens, "requests": stats.requests}


def agents(routing: str) -> list[tuple[str | None, Context, list[str]]]:
    """(routing key, starting context, the three user messages) for each of the 8 agents."""
    registry = ToolRegistry.from_dir(PROMPTS_DIR / "tools")
    out = []
    for role, task in GROUPS.items():
        lineage = f"session-{role}-{secrets.token_hex(4)}"  # the group's parent session: its forks keep its key
        prefix = build_prefix(EXAMPLE, PROMPTS_DIR, role=role, tools=registry)
        for instruction in FORKS:
            context = Context(prefix.blocks)
            key = {"session": lineage, "prefix": context.context_id, "none": None}[routing]
            out.append((key, context, [f"{task} {instruction}", *FOLLOW_UPS]))
    return out


def run_script(base_url: str, model: str, routing: str, max_tokens: int) -> float:
    """All 8 agents at once against `base_url`; wall seconds."""
    registry = ToolRegistry.from_dir(PROMPTS_DIR / "tools")
    tools, enabled = list(registry), set(registry.names())
    salt = secrets.token_hex(8)
    errors: list[BaseException] = []

    def agent(key: str | None, context: Context, messages: list[str]) -> None:
        backend = OpenAIBackend(base_url, model, use_contexts=False)
        try:
            for message in messages:
                context.append(UserInput(message).to_block())
                reply = backend.complete(context, tools, enabled,
                                         GenSettings(max_tokens=max_tokens, salt=salt, routing_key=key))
                context.append(AssistantMessage(reply.text).to_block())
        except BaseException as exc:  # reported after the run
            errors.append(exc)

    threads = [threading.Thread(target=agent, args=spec) for spec in agents(routing)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} agents failed: {errors[0]}")
    return time.perf_counter() - start


def measured(replicas: list[str], run: Any) -> dict[str, Any]:
    """Run `run()` and read what it cost from the replicas' counters."""
    before = {url: counters(url) for url in replicas}
    wall = run()
    after = {url: counters(url) for url in replicas}
    delta = {url: {k: after[url][k] - before[url][k] for k in after[url]} for url in replicas}
    cached, prompt = (sum(d[name] for d in delta.values()) for name in ("cached_tokens", "prompt_tokens"))
    return {"cached_tokens": cached, "prompt_tokens": prompt, "prefill_tokens": prompt - cached,
            "requests_per_replica": {url: d["requests"] for url, d in delta.items()}, "wall_s": wall}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state", type=Path, default=Path(".fleet"), help="the fleet `make fleet` started")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    console = Console(highlight=False)
    state = launch.load(args.state.resolve())
    replicas, router, model = list(state["replicas"]), state["router_url"], state["spec"]["served_name"]
    console.print(f"single replica ({replicas[0]}) ...")
    single = measured(replicas, lambda: run_script(replicas[0] + "/v1", model, "session", args.max_tokens))
    runs = []
    for mode, (policy, routing) in MODES.items():
        console.print(f"{mode}: router {policy}, routing {routing} ...")
        launch.restart_router(args.state.resolve(), policy)
        result = measured(replicas, lambda: run_script(router + "/v1", model, routing, args.max_tokens))
        runs.append({"mode": mode, **result})
    report = {"model": model, "replicas": replicas, "single": single, "runs": runs,
              "agents": len(GROUPS) * len(FORKS), "turns": TURNS}
    table = Table("run", "cached tokens", "prompt tokens", "prefill tokens", "hit rate", "of single",
                  "requests per replica", "wall s", title=f"fleet: {len(replicas)} replicas of {model}")
    for name, row in [("single", single), *((r["mode"], r) for r in runs)]:
        share = row["cached_tokens"] / single["cached_tokens"] if single["cached_tokens"] else 0.0
        rate = row["cached_tokens"] / row["prompt_tokens"] if row["prompt_tokens"] else 0.0
        table.add_row(name, str(row["cached_tokens"]), str(row["prompt_tokens"]), str(row["prefill_tokens"]),
                      f"{100 * rate:.1f}%",
                      f"{share:.2f}", " / ".join(str(n) for n in row["requests_per_replica"].values()),
                      f"{row['wall_s']:.1f}")
    console.print(table)
    base = next(r for r in runs if r["mode"] == "round_robin")["cached_tokens"]
    for r in runs[1:]:
        gain = (r["cached_tokens"] - base) / (single["cached_tokens"] - base) if single["cached_tokens"] > base else 1.0
        console.print(f"{r['mode']}: {r['cached_tokens'] / max(base, 1):.2f}x round_robin's cached tokens, "
                      f"{r['cached_tokens'] / max(single['cached_tokens'], 1):.2f} of one replica's, "
                      f"{gain:.2f} of the gain over round_robin one replica shows; busiest replica "
                      f"{max(r['requests_per_replica'].values()) / max(sum(r['requests_per_replica'].values()), 1):.0%}"
                      " of requests")
    write_json(args.json, report, console)
    return report


if __name__ == "__main__":
    main()
