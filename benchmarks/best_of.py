"""Best-of-n against one sample on the same tasks (`run --samples N`, agentcache/samples.py): each task of the strict
suite run with N = 1, then with N = --samples, each on a fresh copy of its repo, on one engine whose prefixes are
computed before anything is timed; whether it passed, the wall time and the tokens of all candidates, and the
ratios. Edits get the shipped tests as the test command (the agent's `run_tests` at N = 1, the pick at N > 1); the
checker is the suite's, on the picked answer or the repo the pick was applied to. For questions it also says how
many candidates' own answers would have passed (what a perfect pick could reach).

    python -m benchmarks.best_of                             # the edits and first questions of examples/repo, N = 4
    python -m benchmarks.best_of --tasks add-longest-word,top-default --samples 4 --json benchmarks/results/best-of.json
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from agentcache.agent import Agent
from agentcache.backends import GenSettings
from agentcache.config import RunConfig, check_config
from agentcache.records import USAGE_FIELDS, requests_of
from agentcache.samples import SAMPLE_TEMPERATURE, best_of
from agentcache.session import Session
from benchmarks.report import write_json
from benchmarks.task_set import Task, fresh_copy
from benchmarks.tasks import check, context_shown, select, task_config

DEFAULT_TASKS = ("add-longest-word,add-syllables-per-word,fix-syllables-case,fix-words-per-sentence,"
                 "where-syllables,syllables-of-banana,top-default,count-fields")
TEST_COMMAND = f"env PYTHONPATH=.:src {sys.executable} -B -m pytest -q -p no:cacheprovider"  # the shipped tests


def shown_and_seen(agent_context: Any, sessions: list[Session]) -> list[str]:
    """What a candidate was shown (L2 and the lookup note) and what its tool calls returned: what its answer may
    rest on."""
    seen = [r.tool_result["output"] for s in sessions for r in requests_of(s.records()) if r.tool_result]
    return context_shown(agent_context) + seen


def run_task(task: Task, backend: Any, registry: Any, model: str, work: Path, samples: int) -> dict[str, Any]:
    repo = fresh_copy(task.repo, work / f"{task.id}-n{samples}", task.plant)
    config = task_config(model, task, RunConfig().tool_choice)
    if task.kind == "edit":
        config.test_command = TEST_COMMAND
    config.samples = samples
    check_config(config)
    probe = Agent(repo, backend, config, Session(work / f"{task.id}-n{samples}-probe.jsonl"), registry=registry)
    probe.run_start(task.text)  # the context every candidate starts from: L2 and the lookup note
    session = Session.create(repo)
    start = time.perf_counter()
    if samples == 1:
        outcome = Agent(repo, backend, config, session, registry=registry).run(task.text)
        sessions, picked, any_passed = [session], session, None
    else:
        outcome, pick = best_of(repo, task.text, backend, config, session, registry, samples, lambda line: None)
        record = session.records()[-1]
        sessions = [Session.open(repo, c["session_id"]) for c in record["candidates"]]
        picked = pick.session
        any_passed = None
        if task.kind != "edit":  # each candidate's own answer, graded as if it had been picked
            any_passed = sum(check(task, c["answer"], repo, shown_and_seen(probe.context, [s])).passed
                             for c, s in zip(record["candidates"], sessions) if c["answer"])
    wall_s = time.perf_counter() - start
    verdict = check(task, outcome.answer, repo, shown_and_seen(probe.context, [picked]))
    requests = [r for s in sessions for r in requests_of(s.records())]
    return {"id": task.id, "kind": task.kind, "samples": samples, "passed": verdict.passed, "check": verdict.detail,
            "reason": outcome.reason, "answer": outcome.answer, "wall_s": round(wall_s, 3),
            "requests": len(requests), **{name: sum(getattr(r.usage, name) for r in requests) for name in USAGE_FIELDS},
            "candidates_passed": any_passed}


def warm(tasks: list[Task], backend: Any, registry: Any, model: str, work: Path) -> None:
    """Each repo's L1+L2 prefix computed once before anything is timed, so neither N pays the cold prefill."""
    for repo in dict.fromkeys(task.repo for task in tasks):
        task = next(t for t in tasks if t.repo == repo)
        copy = fresh_copy(task.repo, work / f"warm-{repo.name}", task.plant)
        config = check_config(task_config(model, task, RunConfig().tool_choice))
        agent = Agent(copy, backend, config, Session(work / f"warm-{repo.name}.jsonl"), registry=registry)
        backend.complete(agent.context, agent.specs, agent.enabled, GenSettings(max_tokens=1))


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def summary(runs: list[dict[str, Any]], samples: int) -> dict[str, Any]:
    """Pass counts per kind at each N, and N's wall time and tokens over one sample's, summed over the tasks."""
    out: dict[str, Any] = {}
    for n in (1, samples):
        rows = [r for r in runs if r["samples"] == n]
        out[f"n{n}"] = {"tasks": len(rows), "passed": sum(r["passed"] for r in rows),
                        "passed_by_kind": {k: sum(r["passed"] for r in rows if r["kind"] == k)
                                           for k in sorted({r["kind"] for r in rows})},
                        "wall_s": round(sum(r["wall_s"] for r in rows), 3),
                        **{name: sum(r[name] for r in rows) for name in ("computed_tokens", "completion_tokens",
                                                                          "prompt_tokens", "cached_tokens")}}
    one, many = out["n1"], out[f"n{samples}"]
    out["ratios"] = {name: ratio(many[name], one[name]) for name in ("wall_s", "computed_tokens", "completion_tokens")}
    for kind in sorted({r["kind"] for r in runs}):
        walls = {n: sum(r["wall_s"] for r in runs if r["kind"] == kind and r["samples"] == n) for n in (1, samples)}
        out["ratios"][f"{kind}_wall_s"] = ratio(walls[samples], walls[1])
    return out


def table(runs: list[dict[str, Any]], samples: int) -> Table:
    t = Table(title=f"best-of-{samples} against one sample")
    for column in ("task", "kind", "N=1", f"N={samples}", "candidates passed", "wall N=1 s", f"wall N={samples} s",
                   "wall ratio", "computed N=1", f"computed N={samples}"):
        t.add_column(column, justify="left" if column in ("task", "kind") else "right")
    by_id: dict[str, dict[int, dict[str, Any]]] = {}
    for r in runs:
        by_id.setdefault(r["id"], {})[r["samples"]] = r
    for task_id, pair in by_id.items():
        one, many = pair.get(1), pair.get(samples)
        if one is None or many is None:
            continue
        t.add_row(task_id, one["kind"], "pass" if one["passed"] else "FAIL", "pass" if many["passed"] else "FAIL",
                  "-" if many["candidates_passed"] is None else f"{many['candidates_passed']}/{samples}",
                  f"{one['wall_s']:.1f}", f"{many['wall_s']:.1f}", f"{many['wall_s'] / one['wall_s']:.2f}",
                  str(one["computed_tokens"]), str(many["computed_tokens"]))
    return t


def main(argv: list[str] | None = None) -> int:
    from agentcache.backends.local import LocalBackend
    from agentcache.wiring import load_registry, local_engine
    from benchmarks.speed import machine

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default=DEFAULT_TASKS, help="comma-separated task ids of the suite")
    p.add_argument("--samples", type=int, default=4, help="N of the best-of-N runs (each task also runs with 1)")
    p.add_argument("--model", default=RunConfig().model)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    console = Console(width=160)
    tasks = select(args.tasks, None)
    model, engine = local_engine(check_config(RunConfig(model=args.model, disk_cache=False)))
    backend, registry = LocalBackend(model, engine), load_registry()
    runs = []
    with tempfile.TemporaryDirectory(prefix="agentcache-best-of-") as tmp:
        warm(tasks, backend, registry, args.model, Path(tmp))
        for task in tasks:
            for n in (1, args.samples):
                run = run_task(task, backend, registry, args.model, Path(tmp), n)
                console.print(f"{task.id} N={n}: {'pass' if run['passed'] else 'FAIL'} ({run['reason']}, "
                              f"{run['wall_s']:.1f}s, {run['computed_tokens']} computed) {run['check']}", markup=False)
                runs.append(run)
    console.print(table(runs, args.samples))
    report = {"settings": {"model": args.model, "samples": args.samples, "tasks": [t.id for t in tasks],
                           "test_command": "python -B -m pytest -q -p no:cacheprovider (PYTHONPATH=.:src)",
                           "sampled_temperature": SAMPLE_TEMPERATURE, **machine()},
              "runs": runs, "summary": summary(runs, args.samples)}
    console.print(report["summary"], markup=False)
    write_json(args.json, report, console)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
