"""Agent task suite: 15 tasks on examples/repo (questions with one right answer, find-read-answer questions and
edits checked by the repo's own tests), each on a fresh copy of the repo, all of a model's tasks in one process on
one engine; per task pass/fail, turns, wall time and tokens, per model the pass rate and medians.

    python -m benchmarks.tasks                                          # every task on smollm2-135m
    python -m benchmarks.tasks --models smollm2-135m,qwen2.5-coder-0.5b --json out.json
    python -m benchmarks.tasks --tasks where-split-sentences,fix-syllables-case --max-turns 3 --keep runs/
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

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
from benchmarks.task_set import EXAMPLE, KINDS, Task
from benchmarks.tasks_textstats import LONG_TASKS, TASKS
from layers import LayersError

COPY_IGNORE = shutil.ignore_patterns("__pycache__", ".pytest_cache", ".agentcache")
ANSWER_CHARS = 200
NOTES = [
    "Each task runs on a fresh copy of examples/repo; a model's tasks share one engine, so the L1+L2 prefix stays "
    "warm in its memory pool from task to task (the disk tier is off).",
    "Questions are checked against the shipped repo (an agent's edits to its copy cannot move the answer) and pass "
    "only on a final answer with one candidate (no plan, code fence or tool call); find-then-read questions also "
    "need a tool output to have shown the line the answer stands on. Edits pass when the copy's tests pass, with "
    "the shipped tests restored, the test configuration it added undone, and the suite's own test written beside "
    "them.",
    "cached/prefix: the lowest cached_tokens / prefix_tokens over a task's requests after its first (none for a "
    "one-turn task). warm turn s: the engine's total time of each such request (queue, prefill, decode).",
    "unparseable: requests whose reply was not a valid tool call or answer.",
    "misses: each request that reused less than the previous prompt allowed, by cause (inspect --explain's miss "
    "ledger); unexpl.: those no record explains. compactions: each one's net tokens over the requests after it (at "
    "most 3): the prompt tokens it removed from each, less the summary request and the prefill it added.",
]


SUITES = {"default": TASKS, "long": LONG_TASKS}


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
    return [Task(t.id, t.kind, t.text, t.check, min(t.max_turns, cap)) for t in chosen]


def task_config(model: str, task: Task, tool_choice: str, compact_at: int = 0) -> RunConfig:
    """The run settings of one task: the defaults, its turns, no disk tier, compaction past `compact_at` tokens
    (0: at the window); where the config has a `mode`, questions run read-only and edits in edit mode."""
    config = RunConfig(model=model, max_turns=task.max_turns, disk_cache=False, tool_choice=tool_choice,
                       compact_at=compact_at)
    if "mode" in {item.name for item in fields(RunConfig)}:
        setattr(config, "mode", "edit" if task.kind == "edit" else "read-only")
    return check_config(config)


def copy_example(target: Path) -> Path:
    if target.exists():
        raise AgentcacheError(f"{target} already exists: give --keep an empty folder")
    shutil.copytree(EXAMPLE, target, ignore=COPY_IGNORE)
    return target


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
        "id": task.id, "kind": task.kind, "passed": verdict.passed, "check": verdict.detail,
        "reason": outcome.reason, "turns": outcome.turns, "wall_s": round(wall_s, 3), **sums,
        "cached_over_prefix_min": cached_over_prefix_min(requests), "warm_turn_s": [round(s, 3) for s in warm],
        "unparseable": sum(1 for r in requests if r.error), "tools": [r.tool for r in requests if r.tool],
        "answer": (outcome.answer or "")[:ANSWER_CHARS] or None, "session_id": session.id,
        **cache_accounts(session),
    }


def run_one(task: Task, backend: Any, registry: Any, model: str, work: Path, tool_choice: str,
            compact_at: int = 0) -> dict[str, Any]:
    """One task on its own copy of the example repo; the checker reads the shipped repo for a question."""
    repo = copy_example(work / task.id)
    session = Session.create(repo)
    agent = Agent(repo, backend, task_config(model, task, tool_choice, compact_at), session, registry=registry)
    start = time.perf_counter()
    outcome = agent.run(task.text)
    wall_s = time.perf_counter() - start
    requests = requests_of(session.records())
    seen = [r.tool_result["output"] for r in requests if r.tool_result]  # what the agent's tool calls showed it
    verdict = task.check(outcome.answer, repo if task.kind == "edit" else EXAMPLE, seen)
    return task_record(task, outcome, verdict, requests, wall_s, session)


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def model_report(name: str, records: list[dict[str, Any]], load_s: float) -> dict[str, Any]:
    return {
        "name": name, "pass_rate": round(sum(r["passed"] for r in records) / len(records), 3),
        "passed": sum(r["passed"] for r in records), "tasks_run": len(records),
        "median_turns": median([r["turns"] for r in records]),
        "median_wall_s": median([r["wall_s"] for r in records]),
        "median_warm_turn_s": median([s for r in records for s in r["warm_turn_s"]]),
        "unparseable": sum(r["unparseable"] for r in records), "load_s": round(load_s, 3),
        "unexplained_misses": sum(r["unexplained_misses"] for r in records),
        "compactions": sum(len(r["compactions"]) for r in records),
        "compaction_net_tokens": sum(c["net_tokens"] for r in records for c in r["compactions"]),
        "tasks": records,
    }


def run_model(name: str, tasks: list[Task], work: Path, console: Console, tool_format: str = "auto",
              tool_choice: str = RunConfig().tool_choice, quant: str = RunConfig().quant,
              compact_at: int = 0) -> dict[str, Any]:
    """Every task on one model and one engine, loaded once (weights quantized by `quant`); the backend replies in
    `tool_format`, `tool_choice`."""
    from agentcache.backends.local import LocalBackend
    from agentcache.wiring import load_registry, local_engine

    start = time.perf_counter()
    model, engine = local_engine(check_config(RunConfig(model=name, disk_cache=False, quant=quant)))
    load_s = time.perf_counter() - start
    backend, registry = LocalBackend(model, engine, tool_format, tool_choice), load_registry()
    (work / slug(name)).mkdir(parents=True, exist_ok=True)
    records = []
    for task in tasks:
        record = run_one(task, backend, registry, name, work / slug(name), tool_choice, compact_at)
        console.print(f"{name} {task.id}: {'pass' if record['passed'] else 'FAIL'} ({record['reason']}, "
                      f"{record['turns']} turns, {record['wall_s']:.1f}s) {record['check']}", markup=False)
        records.append(record)
    return model_report(name, records, load_s)


def cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def model_table(report: dict[str, Any]) -> Table:
    t = Table(title=f"tasks, {report['name']}: {report['passed']}/{report['tasks_run']} passed")
    columns = ("id", "kind", "pass", "reason", "turns", "wall s", "prompt", "cached", "computed", "completion",
               "cached/prefix", "misses", "unexpl.", "compactions (net tokens)")
    for name in columns:
        t.add_column(name, justify="left" if name in ("id", "kind", "reason") else "right")
    for r in report["tasks"]:
        misses = ", ".join(f"{tag} {n}" for tag, n in r["misses"].items()) or "-"
        nets = ", ".join(f"{c['net_tokens']:+d}" for c in r["compactions"]) or "-"
        t.add_row(r["id"], r["kind"], "yes" if r["passed"] else "no", r["reason"], str(r["turns"]),
                  f"{r['wall_s']:.1f}", *(str(r[name]) for name in USAGE_FIELDS), cell(r["cached_over_prefix_min"]),
                  misses, str(r["unexplained_misses"]), nets)
    return t


def summary_table(reports: list[dict[str, Any]]) -> Table:
    t = Table(title="tasks, per model")
    for name in ("model", "pass rate", "median turns", "median wall s", "median warm turn s", "unparseable",
                 "load s", "unexplained misses", "compactions", "compaction net tokens"):
        t.add_column(name, justify="left" if name == "model" else "right")
    for r in reports:
        t.add_row(r["name"], f"{r['pass_rate']:.2f}", cell(r["median_turns"]), cell(r["median_wall_s"]),
                  cell(r["median_warm_turn_s"]), str(r["unparseable"]), f"{r['load_s']:.1f}",
                  str(r["unexplained_misses"]), str(r["compactions"]), f"{r['compaction_net_tokens']:+d}")
    return t


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=RunConfig().model, help="comma-separated model names, run one after another")
    p.add_argument("--suite", default="default", choices=tuple(SUITES),
                   help=f"the {len(TASKS)} tasks, or the {len(LONG_TASKS)} long ones that read many files")
    p.add_argument("--tasks", help="comma-separated task ids of the suite (default: all)")
    p.add_argument("--max-turns", type=int, help="cap every task's turns at this")
    p.add_argument("--json", type=Path, help="write the report here")
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


def run_suite(args: argparse.Namespace, work: Path, console: Console) -> dict[str, Any]:
    tasks = select(args.tasks, args.max_turns, args.suite)
    names = [name.strip() for name in args.models.split(",") if name.strip()]
    if not names:
        raise AgentcacheError("--models names no model")
    reports = [run_model(name, tasks, work, console, args.tool_format, args.tool_choice, args.quant, args.compact_at)
               for name in names]
    return {"models": reports, "settings": {"suite": args.suite, "tasks": [t.id for t in tasks],
                                            "max_turns": args.max_turns,
                                            "tool_format": args.tool_format, "tool_choice": args.tool_choice,
                                            "quant": args.quant, "max_tokens": RunConfig().max_tokens,
                                            "compact_at": args.compact_at},
            "notes": NOTES}


def main(argv: list[str] | None = None) -> int:
    from engine import EngineError

    args = parse_args(argv)
    console = Console(width=140)
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
