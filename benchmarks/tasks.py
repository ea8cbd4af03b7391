"""Agent task suite: questions (where is X defined, what does Y default to, which exception, counting), find-then-read
questions and edits (additions, planted bugs), each checked strictly (benchmarks/task_checks.py), on three
repositories: examples/repo and the real projects under benchmarks/repos/ (tasks_textstats.py, tasks_cachetools.py,
tasks_tomli.py). Each task runs on a fresh copy of its repo, once greedily and `--seeds` more times sampled at
`--temperature`; by agentcache's own loop on one engine per model, or by a peer harness (mini-swe-agent, Aider)
driving the same model through `agentcache serve` (benchmarks/peer_agents.py). Per task pass/fail, turns, wall time
and tokens; per harness and model the greedy pass rate, the sampled ones, per kind, and medians.

    python -m benchmarks.tasks                                           # every task on the default model
    python -m benchmarks.tasks --models qwen2.5-coder-1.5b,qwen2.5-coder-0.5b --json out.json
    python -m benchmarks.tasks --harness agentcache,mini-swe-agent,aider --records runs.jsonl --json out.json
    python -m benchmarks.tasks --tasks where-split-sentences,fix-syllables-case --seeds 0 --keep runs/

`--records PATH` appends every finished task run to PATH (one JSON line, with the tool outputs it saw) and skips the
runs PATH already holds, so a long run that stops resumes where it stopped. `--report` runs nothing and reports what
`--records` holds, with `--also A.jsonl,B.jsonl` read before it: agentcache gets a row per file (with the revisions
its records name), a peer one row across files.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.table import Table

from agentcache.agent import Agent, Outcome
from agentcache.config import QUANTS, TOOL_CHOICES, RunConfig, check_config
from agentcache.errors import AgentcacheError
from agentcache.inspect.compactions import compaction_rows
from agentcache.inspect.misses import explain_view
from agentcache.records import USAGE_FIELDS, Request, requests_of
from agentcache.session import Session
from benchmarks.report import write_json
from benchmarks.task_checks import Verdict
from benchmarks.task_set import EXAMPLE, KINDS, Task, fresh_copy
from benchmarks.tasks_cachetools import TASKS as CACHETOOLS_TASKS
from benchmarks.tasks_textstats import LONG_TASKS
from benchmarks.tasks_textstats import TASKS as TEXTSTATS_TASKS
from benchmarks.tasks_tomli import TASKS as TOMLI_TASKS
from layers import LayersError

TASKS = TEXTSTATS_TASKS + CACHETOOLS_TASKS + TOMLI_TASKS
HARNESSES = ("agentcache", "mini-swe-agent", "aider")
ANSWER_CHARS = 200
TEMPERATURE = 0.7  # the seeded runs' sampling temperature
NOTES = [
    "Each task runs on a fresh copy of its repo (a fix's bug planted in the copy); agentcache's tasks of one model "
    "share one engine, so each repo's L1+L2 prefix stays warm in its memory pool from task to task (the disk tier "
    "is off). A peer harness drives the same model through one `agentcache serve` process.",
    "greedy: temperature 0. sampled: each seed's run at the suite's temperature, every reply seeded by the seed and "
    "its turn.",
    "Questions are checked against the shipped repo (an agent's edits to its copy cannot move the answer) and pass "
    "only on a final answer with one candidate (no plan, code fence or tool call); find-then-read questions also "
    "need a tool output to have shown the line the answer stands on. Edits pass when the copy's tests pass, with "
    "the shipped tests restored, the test configuration it added undone, and the suite's hidden test written beside "
    "them.",
    "cached/prefix: the lowest cached_tokens / prefix_tokens over a task's requests after its first (none for a "
    "one-turn task). warm turn s: the engine's total time of each such request (queue, prefill, decode).",
    "unparseable: requests whose reply was not a valid tool call or answer.",
    "misses: each request that reused less than the previous prompt allowed, by cause (inspect --explain's miss "
    "ledger); unexpl.: those no record explains. compactions: each one's net tokens over the requests after it (at "
    "most 3): the prompt tokens it removed from each, less the summary request and the prefill it added.",
]


SUITES = {"default": TASKS, "textstats": TEXTSTATS_TASKS, "long": LONG_TASKS}


def select(ids: str | None, max_turns: int | None, suite: str = "default") -> list[Task]:
    """The tasks of `suite` that `--tasks` names (all when None), in suite order, each capped at `max_turns`."""
    chosen_suite = SUITES[suite]
    by_id = {task.id: task for task in chosen_suite}
    wanted = [name.strip() for name in ids.split(",") if name.strip()] if ids else list(by_id)
    unknown = [name for name in wanted if name not in by_id]
    if unknown or not wanted:
        raise AgentcacheError(f"unknown task {', '.join(map(repr, unknown)) or '(none named)'} "
                              f"(known: {', '.join(by_id)})")
    if max_turns is not None and max_turns < 1:
        raise AgentcacheError(f"--max-turns must be at least 1, got {max_turns}")
    chosen = [task for task in chosen_suite if task.id in wanted]
    cap = max_turns or max(task.max_turns for task in chosen_suite)
    return [Task(t.id, t.kind, t.text, t.check, min(t.max_turns, cap), t.repo, t.plant) for t in chosen]


def task_config(model: str, task: Task, tool_choice: str, compact_at: int = 0, temperature: float = 0.0,
                seed: int = 0) -> RunConfig:
    """The run settings of one task: the defaults, its turns, no disk tier, compaction past `compact_at` tokens
    (0: at the window), sampling at `temperature` with `seed`; questions run read-only and edits in edit mode."""
    config = RunConfig(model=model, max_turns=task.max_turns, disk_cache=False, tool_choice=tool_choice,
                       compact_at=compact_at, temperature=temperature, seed=seed)
    if "mode" in {item.name for item in fields(RunConfig)}:
        setattr(config, "mode", "edit" if task.kind == "edit" else "read-only")
    return check_config(config)


def slug(name: str) -> str:
    """A model name as one folder name (a hub id holds a slash)."""
    return re.sub(r"[^\w.-]+", "_", name)


def cached_over_prefix_min(requests: list[Request]) -> float | None:
    """The lowest share of the L1+L2 prefix served from cache on the task's turns after its first."""
    ratios = [r.usage.cached_tokens / r.prefix_tokens for r in requests[1:] if r.prefix_tokens]
    return round(min(ratios), 3) if ratios else None


def cache_accounts(session: Session) -> dict[str, Any]:
    """The session's miss ledger (misses per cause, unexplained ones) and its compactions' cost and savings."""
    records = session.records()
    ledger = explain_view(session, records)["ledger"]
    return {"misses": {tag: row["misses"] for tag, row in ledger["causes"].items() if row["misses"]},
            "unexplained_misses": ledger["unexplained"],
            "compactions": [{name: row[name] for name in ("turn", "dropped", "cost_tokens", "requests_after",
                                                          "saved_tokens", "net_tokens")}
                            for row in compaction_rows(records)]}


def task_record(task: Task, outcome: Outcome, verdict: Verdict, requests: list[Request], wall_s: float,
                session: Session) -> dict[str, Any]:
    sums = {name: sum(getattr(r.usage, name) for r in requests) for name in USAGE_FIELDS}
    requests = [r for r in requests if r.purpose is None]  # the agent's turns (not its summary requests)
    warm = [r.timings["total_s"] for r in requests[1:] if r.timings.get("total_s") is not None]
    return {
        "id": task.id, "kind": task.kind, "repo": task.repo.name, "passed": verdict.passed, "check": verdict.detail,
        "reason": outcome.reason, "turns": outcome.turns, "wall_s": round(wall_s, 3), **sums,
        "cached_over_prefix_min": cached_over_prefix_min(requests), "warm_turn_s": [round(s, 3) for s in warm],
        "unparseable": sum(1 for r in requests if r.error), "tools": [r.tool for r in requests if r.tool],
        "refused": [{"reply": r.reply, "error": r.error} for r in requests if r.error],  # what was sent back, and why
        "answer": outcome.answer or None, "session_id": session.id,
        **cache_accounts(session),
    }


def check(task: Task, answer: str | None, repo: Path, seen: list[str]) -> Verdict:
    """The task's verdict: a question against the shipped repo (the agent's copy cannot move the answer), an edit on
    the agent's copy."""
    return task.check(answer, repo if task.kind == "edit" else task.repo, seen, task.text)


def run_one(task: Task, backend: Any, registry: Any, model: str, work: Path, tool_choice: str,
            compact_at: int = 0, temperature: float = 0.0, seed: int = 0) -> dict[str, Any]:
    """One task on its own copy of its repo, by agentcache's loop; the record keeps the tool outputs it saw."""
    repo = fresh_copy(task.repo, work / task.id, task.plant)
    session = Session.create(repo)
    config = task_config(model, task, tool_choice, compact_at, temperature, seed)
    agent = Agent(repo, backend, config, session, registry=registry)
    start = time.perf_counter()
    outcome = agent.run(task.text)
    wall_s = time.perf_counter() - start
    requests = requests_of(session.records())
    seen = [r.tool_result["output"] for r in requests if r.tool_result]  # what the agent's tool calls showed it
    shown = context_shown(agent.context)
    verdict = check(task, outcome.answer, repo, shown + seen)
    return {**task_record(task, outcome, verdict, requests, wall_s, session), "tool_outputs": seen,
            "context_shown": shown}


def context_shown(context: Any) -> list[str]:
    """What the harness itself showed the agent about the repo, besides its tool results: the L2 blocks (tree,
    docs, skills, repo map) and the lookup note after the task. A find-then-read answer may rest on a line of it."""
    return [b.text for b in context if b.layer.name == "L2" or (b.kind == "user" and b.key == "lookup")]


def peer_record(task: Task, run: Any, verdict: Verdict) -> dict[str, Any]:
    """A peer harness's task run (benchmarks.peer_agents.PeerRun) in the suite's record shape; what the peer does
    not report (the engine's per-request timings, agentcache's own ledgers) is None."""
    return {
        "id": task.id, "kind": task.kind, "repo": task.repo.name, "passed": verdict.passed, "check": verdict.detail,
        "reason": run.reason, "turns": run.turns, "wall_s": round(run.wall_s, 3),
        "prompt_tokens": run.prompt_tokens, "cached_tokens": run.cached_tokens,
        "computed_tokens": run.prompt_tokens - run.cached_tokens, "completion_tokens": run.completion_tokens,
        "cached_over_prefix_min": None, "warm_turn_s": [], "unparseable": None, "tools": [],
        "answer": run.answer or None, "session_id": None, "misses": {},
        "unexplained_misses": None, "compactions": [], "tool_outputs": run.tool_outputs,
    }


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def rate(records: list[dict[str, Any]]) -> float | None:
    return round(sum(r["passed"] for r in records) / len(records), 3) if records else None


def total(records: list[dict[str, Any]], name: str) -> int | None:
    values = [r[name] if isinstance(r[name], int) else len(r[name]) for r in records if r[name] is not None]
    return sum(values) if values else None


def public(record: dict[str, Any]) -> dict[str, Any]:
    """A record as the report shows it: its answer's first ANSWER_CHARS characters, no tool outputs and no context
    (--records keeps them whole)."""
    shown = {name: value for name, value in record.items() if name not in ("tool_outputs", "context_shown")}
    return shown | {"answer": (record["answer"] or "")[:ANSWER_CHARS] or None}


def regraded(record: dict[str, Any], task: Task) -> dict[str, Any]:
    """A stored question's record graded again by today's checker from its whole answer and tool outputs (an edit,
    whose copy is gone, or a record whose answer was stored cut, keeps its verdict)."""
    answer = record["answer"]
    if task.kind == "edit" or answer is not None and len(answer) == ANSWER_CHARS and "answer_chars" not in record:
        return record
    verdict = check(task, answer, task.repo, record.get("context_shown", []) + record["tool_outputs"])
    return record | {"passed": verdict.passed, "check": verdict.detail}


def model_report(name: str, records: list[dict[str, Any]], load_s: float | None,
                 sampled: dict[int, list[dict[str, Any]]] | None = None, harness: str = "agentcache",
                 quant: str | None = None) -> dict[str, Any]:
    """One harness on one model: the greedy run's pass rate, per kind, medians and tokens (today's keys), and the
    sampled runs' pass rates, one per seed."""
    sampled = sampled or {}
    every = records + [r for runs in sampled.values() for r in runs]
    rates = [rate(runs) for _, runs in sorted(sampled.items())]
    return {
        "name": name, "harness": harness, "quant": quant, "pass_rate": rate(records),
        "passed": sum(r["passed"] for r in records), "tasks_run": len(records),
        "kind_pass_rate": {kind: rate([r for r in records if r["kind"] == kind])
                           for kind in KINDS if any(r["kind"] == kind for r in records)},
        "sampled_pass_rates": rates, "sampled_seeds": sorted(sampled),
        "sampled_pass_rate_mean": round(statistics.mean(rates), 3) if rates else None,
        "sampled_pass_rate_min": min(rates) if rates else None, "sampled_pass_rate_max": max(rates) if rates else None,
        "sampled_kind_pass_rate": {kind: rate([r for runs in sampled.values() for r in runs if r["kind"] == kind])
                                   for kind in KINDS if any(r["kind"] == kind for r in every)} if sampled else {},
        "median_turns": median([r["turns"] for r in every]),
        "median_wall_s": median([r["wall_s"] for r in every]),
        "median_warm_turn_s": median([s for r in every for s in r["warm_turn_s"]]),
        "median_tokens": {field: median([r[field] for r in every]) for field in USAGE_FIELDS},
        "unparseable": total(records, "unparseable"), "load_s": None if load_s is None else round(load_s, 3),
        "unexplained_misses": total(records, "unexplained_misses"),
        "compactions": total(records, "compactions"),
        "compaction_net_tokens": sum(c["net_tokens"] for r in records for c in r["compactions"]),
        "tasks": [public(r) for r in records],
        "sampled": [{"seed": seed, "pass_rate": rate(runs), "passed": sum(r["passed"] for r in runs),
                     "tasks_run": len(runs), "tasks": [public(r) for r in runs]}
                    for seed, runs in sorted(sampled.items())],
    }


class RecordLog:
    """The finished task runs of `--records`: read once, appended to (one JSON line each, flushed) as runs finish,
    so a rerun skips what is done. None keeps them in memory only."""

    def __init__(self, path: Path | None):
        self.path, self.done = path, {}
        if path is not None and path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    record = json.loads(line)
                    self.done[self.key(record["harness"], record["model"], record["quant"], record["seed"],
                                       record["id"])] = record

    @staticmethod
    def key(harness: str, model: str, quant: str, seed: int | None, task_id: str) -> str:
        return f"{harness}|{model}|{quant}|{'greedy' if seed is None else seed}|{task_id}"

    def run(self, harness: str, model: str, quant: str, seed: int | None, task: Task,
            run: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
        """The record of `task` in this run: the stored one, or `run()`'s, stored. Also whether it was stored."""
        key = self.key(harness, model, quant, seed, task.id)
        if key in self.done:
            return self.done[key], True
        record = {**run(), "harness": harness, "model": model, "quant": quant, "seed": seed,
                  "revision": revision()}
        record["answer_chars"] = len(record["answer"] or "")  # the answer is kept whole
        self.done[key] = record
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as file:
                file.write(json.dumps(record) + "\n")
        return record, False


@functools.cache
def revision() -> str | None:
    """The project's commit that ran a record, with "+changes" when the harness's code differs from it; None
    outside a git checkout."""
    root = Path(__file__).resolve().parent.parent
    git = ["git", "-C", str(root)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        return None
    clean = subprocess.run([*git, "diff", "--quiet", "HEAD", "--", "agentcache", "engine", "layers"])
    return head.stdout.strip() + ("" if clean.returncode == 0 else "+changes")


def run_label(seed: int | None) -> str:
    return "greedy" if seed is None else f"seed-{seed}"


def progress(console: Console, harness: str, name: str, seed: int | None, record: dict[str, Any],
             stored: bool) -> None:
    console.print(f"{harness} {name} {run_label(seed)} {record['id']}: {'pass' if record['passed'] else 'FAIL'} "
                  f"({record['reason']}, {record['turns']} turns, {record['wall_s']:.1f}s"
                  f"{', stored' if stored else ''}) {record['check']}", markup=False)


def seeds_of(count: int) -> list[int | None]:
    """The runs of each task: greedy, then seeds 1..count."""
    return [None, *range(1, count + 1)]


def split_runs(records: dict[int | None, list[dict[str, Any]]], name: str, load_s: float | None, harness: str,
               quant: str) -> dict[str, Any]:
    greedy = records.pop(None)
    revisions = {r.get("revision") or "?" for r in greedy + [r for runs in records.values() for r in runs]}
    return {**model_report(name, greedy, load_s, records, harness, quant),
            "revisions": sorted(revisions) if harness == "agentcache" else []}  # a peer's harness is not ours


def run_model(name: str, tasks: list[Task], work: Path, console: Console, tool_format: str = "auto",
              tool_choice: str = RunConfig().tool_choice, quant: str = RunConfig().quant,
              compact_at: int = 0, seeds: int = 0, temperature: float = TEMPERATURE,
              log: RecordLog | None = None) -> dict[str, Any]:
    """Every task on one model by agentcache's loop, on one engine loaded once (only when a run is not stored),
    weights quantized by `quant`; the backend replies in `tool_format`, `tool_choice`. Greedy, then `seeds` sampled
    runs at `temperature`."""
    from agentcache.backends.local import LocalBackend
    from agentcache.wiring import load_registry, local_engine

    log = log or RecordLog(None)
    loaded: list[Any] = []
    load_s = None

    def engine() -> tuple[Any, Any]:
        nonlocal load_s
        if not loaded:
            start = time.perf_counter()
            model, engine = local_engine(check_config(RunConfig(model=name, disk_cache=False, quant=quant)))
            load_s = time.perf_counter() - start
            loaded.extend([LocalBackend(model, engine, tool_format, tool_choice, RunConfig().speculate),
                           load_registry()])
        return loaded[0], loaded[1]

    runs: dict[int | None, list[dict[str, Any]]] = {}
    for seed in seeds_of(seeds):
        folder = work / "agentcache" / slug(name) / run_label(seed)
        folder.mkdir(parents=True, exist_ok=True)
        for task in tasks:
            def one() -> dict[str, Any]:
                backend, registry = engine()
                return run_one(task, backend, registry, name, folder, tool_choice, compact_at,
                               0.0 if seed is None else temperature, seed or 0)

            record, stored = log.run("agentcache", name, quant, seed, task, one)
            progress(console, "agentcache", name, seed, record, stored)
            runs.setdefault(seed, []).append(record)
    return split_runs(runs, name, load_s, "agentcache", quant)


def run_peer_models(peers: list[str], name: str, tasks: list[Task], work: Path, console: Console, quant: str,
                    seeds: int = 0, temperature: float = TEMPERATURE,
                    log: RecordLog | None = None) -> list[dict[str, Any]]:
    """Every task on one model by each peer harness, through one `agentcache serve` process started only when a run
    is not stored; the peers take turns task by task, so a run that stops leaves them on the same tasks. The same
    checkers grade what they answer or edit."""
    from benchmarks.peer_agents import Server, run_peer

    log = log or RecordLog(None)
    servers: list[Any] = []
    runs: dict[str, dict[int | None, list[dict[str, Any]]]] = {harness: {} for harness in peers}
    with ExitStack() as stack:
        for seed in seeds_of(seeds):
            for task in tasks:
                for harness in peers:
                    folder = work / harness / slug(name) / run_label(seed)
                    folder.mkdir(parents=True, exist_ok=True)

                    def one() -> dict[str, Any]:
                        if not servers:
                            log_file = work / f"{slug(name)}-serve.log"
                            servers.append(stack.enter_context(Server(name, quant, log=log_file)))
                        repo = fresh_copy(task.repo, folder / task.id, task.plant)
                        run = run_peer(harness, task.text, task.kind, repo, servers[0], name, task.max_turns,
                                       0.0 if seed is None else temperature, seed)
                        return peer_record(task, run, check(task, run.answer, repo, run.tool_outputs)) | {
                            "harness_version": run.version}

                    record, stored = log.run(harness, name, quant, seed, task, one)
                    progress(console, harness, name, seed, record, stored)
                    runs[harness].setdefault(seed, []).append(record)
    return [split_runs(runs[harness], name, None, harness, quant) for harness in peers]


def cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def model_table(report: dict[str, Any]) -> Table:
    t = Table(title=f"tasks, {report['harness']} on {report['name']}: {report['passed']}/{report['tasks_run']} "
                    "passed greedily")
    seeds = [run["seed"] for run in report["sampled"]]
    sampled = {run["seed"]: {r["id"]: r["passed"] for r in run["tasks"]} for run in report["sampled"]}
    columns = ("id", "kind", "repo", "pass", *(f"seed {s}" for s in seeds), "reason", "turns", "wall s", "prompt",
               "cached", "computed", "completion", "cached/prefix", "misses", "unexpl.", "compactions (net tokens)")
    for name in columns:
        t.add_column(name, justify="left" if name in ("id", "kind", "repo", "reason") else "right")
    for r in report["tasks"]:
        misses = ", ".join(f"{tag} {n}" for tag, n in r["misses"].items()) or "-"
        nets = ", ".join(f"{c['net_tokens']:+d}" for c in r["compactions"]) or "-"
        marks = ["yes" if sampled[s].get(r["id"]) else "no" if r["id"] in sampled[s] else "-" for s in seeds]
        t.add_row(r["id"], r["kind"], r.get("repo", "repo"), "yes" if r["passed"] else "no", *marks, r["reason"],
                  str(r["turns"]), f"{r['wall_s']:.1f}", *(str(r[name]) for name in USAGE_FIELDS),
                  cell(r["cached_over_prefix_min"]), misses, cell(r["unexplained_misses"]), nets)
    return t


def summary_table(reports: list[dict[str, Any]]) -> Table:
    t = Table(title="tasks, per harness and model")
    kinds = [kind for kind in KINDS if any(kind in r["kind_pass_rate"] for r in reports)]
    for name in ("harness", "model", "greedy pass", "sampled pass: mean (min-max)", *kinds, "median turns",
                 "median wall s", "median warm turn s", "median prompt", "median cached", "median computed",
                 "median completion", "unparseable", "load s"):
        t.add_column(name, justify="left" if name in ("harness", "model") else "right")
    for r in reports:
        spread = (f"{r['sampled_pass_rate_mean']:.2f} ({r['sampled_pass_rate_min']:.2f}-"
                  f"{r['sampled_pass_rate_max']:.2f})" if r["sampled_pass_rates"] else "-")
        harness = r["harness"] + "".join(f" {revision}" for revision in r.get("revisions", []))
        t.add_row(harness, r["name"], f"{r['passed']}/{r['tasks_run']}", spread,
                  *(cell(r["kind_pass_rate"].get(kind)) for kind in kinds), cell(r["median_turns"]),
                  cell(r["median_wall_s"]), cell(r["median_warm_turn_s"]),
                  *(cell(r["median_tokens"][name]) for name in USAGE_FIELDS), cell(r["unparseable"]),
                  cell(r["load_s"]))
    return t


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=RunConfig().model, help="comma-separated model names, run one after another")
    p.add_argument("--harness", default="agentcache",
                   help=f"comma-separated harnesses, run one after another: {', '.join(HARNESSES)} (the peers "
                        "need `make peers-agents`)")
    p.add_argument("--suite", default="default", choices=tuple(SUITES),
                   help=f"the {len(TASKS)} tasks on three repos, the {len(TEXTSTATS_TASKS)} on examples/repo, or "
                        f"the {len(LONG_TASKS)} long ones that read many files")
    p.add_argument("--tasks", help="comma-separated task ids of the suite (default: all)")
    p.add_argument("--max-turns", type=int, help="cap every task's turns at this")
    p.add_argument("--seeds", type=int, default=3,
                   help="sampled runs of each task after its greedy one (seeds 1..N; default 3; 0: greedy only)")
    p.add_argument("--temperature", type=float, default=TEMPERATURE, help="the sampled runs' temperature")
    p.add_argument("--json", type=Path, help="write the report here")
    p.add_argument("--records", type=Path,
                   help="append each finished task run here (JSON lines, with its tool outputs) and skip the runs "
                        "it holds")
    p.add_argument("--also", help="with --report: comma-separated record files read before --records (for one "
                                  "report of runs stored apart)")
    p.add_argument("--report", action="store_true",
                   help="run nothing: report every harness and model --records holds a greedy run of, with the seeds "
                        "it holds")
    p.add_argument("--tool-format", default="auto", choices=("auto", "native", "json"),
                   help="how replies are written (auto: the template's native format when it has one)")
    p.add_argument("--tool-choice", default=RunConfig().tool_choice, choices=TOOL_CHOICES,
                   help="first: a task's first reply is a tool call; required: every reply is a tool call, the "
                        "answer comes through finish; auto: any reply may answer")
    p.add_argument("--quant", default=RunConfig().quant, choices=QUANTS, help="weight-only quantization")
    p.add_argument("--compact-at", type=int, default=0,
                   help="compact a task's L3 past this many prompt tokens (default 0: only at the model's window)")
    p.add_argument("--keep", type=Path, help="keep each task's repo copy and session under this folder")
    return p.parse_args(argv)


def names(text: str, what: str) -> list[str]:
    found = [name.strip() for name in text.split(",") if name.strip()]
    if not found:
        raise AgentcacheError(f"--{what} names nothing")
    return found


def read_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def stored_reports(files: list[list[dict[str, Any]]], tasks: list[Task]) -> list[dict[str, Any]]:
    """The report of every harness, model and quant the records hold a greedy run of (agentcache's once per file,
    with the revisions its records name; a peer's records make one row across files: its harness is not ours),
    from the records alone (nothing is run; questions `regraded`): the greedy run and each seed's, over the tasks
    of `tasks` each holds, in suite order. A later record of the same run replaces an earlier one."""
    order, by_id = {task.id: i for i, task in enumerate(tasks)}, {task.id: task for task in tasks}
    groups: dict[tuple[str, str, str, int], dict[int | None, dict[str, dict[str, Any]]]] = {}
    for source, records in enumerate(files):
        for record in records:
            if record["id"] in order:
                own = source if record["harness"] == "agentcache" else -1
                runs = groups.setdefault((record["harness"], record["model"], record["quant"], own), {})
                runs.setdefault(record["seed"], {})[record["id"]] = regraded(record, by_id[record["id"]])
    reports = []
    for (harness, name, quant, _), runs in groups.items():
        ordered = {seed: sorted(done.values(), key=lambda r: order[r["id"]]) for seed, done in runs.items()}
        if None in ordered:
            reports.append(split_runs(ordered, name, None, harness, quant))
    return reports


def run_suite(args: argparse.Namespace, work: Path, console: Console) -> dict[str, Any]:
    tasks = select(args.tasks, args.max_turns, args.suite)
    models, harnesses = names(args.models, "models"), names(args.harness, "harness")
    if unknown := [h for h in harnesses if h not in HARNESSES]:
        raise AgentcacheError(f"unknown harness {', '.join(map(repr, unknown))} (known: {', '.join(HARNESSES)})")
    if args.seeds < 0:
        raise AgentcacheError(f"--seeds must be at least 0, got {args.seeds}")
    log = RecordLog(args.records)
    reports = []
    if args.report:
        if args.records is None or not log.done:
            raise AgentcacheError("--report needs --records with stored runs")
        also = [Path(name) for name in names(args.also, "also")] if args.also else []
        if missing := [str(path) for path in also if not path.is_file()]:
            raise AgentcacheError(f"--also names no file: {', '.join(missing)}")
        harnesses, reports = [], stored_reports([read_records(path) for path in [*also, args.records]], tasks)
    peers = [harness for harness in harnesses if harness != "agentcache"]
    for name in models:
        if "agentcache" in harnesses:
            reports.append(run_model(name, tasks, work, console, args.tool_format, args.tool_choice, args.quant,
                                     args.compact_at, args.seeds, args.temperature, log))
        if peers:
            reports.extend(run_peer_models(peers, name, tasks, work, console, args.quant, args.seeds,
                                           args.temperature, log))
    return {"models": reports, "settings": {"suite": args.suite, "tasks": [t.id for t in tasks],
                                            "harnesses": sorted({r["harness"] for r in reports}), "max_turns": args.max_turns,
                                            "seeds": args.seeds, "temperature": args.temperature,
                                            "tool_format": args.tool_format, "tool_choice": args.tool_choice,
                                            "quant": args.quant, "max_tokens": RunConfig().max_tokens,
                                            "compact_at": args.compact_at},
            "notes": NOTES}


def main(argv: list[str] | None = None) -> int:
    from engine import EngineError

    args = parse_args(argv)
    console = Console(width=160)
    try:
        with tempfile.TemporaryDirectory(prefix="agentcache-tasks-") as tmp:
            report = run_suite(args, args.keep or Path(tmp), console)
    except (AgentcacheError, EngineError, LayersError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    for model in report["models"]:
        console.print(model_table(model))
    console.print(summary_table(report["models"]))
    for note in NOTES:
        console.print(note, markup=False)
    write_json(args.json, report, console)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
