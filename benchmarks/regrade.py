"""Regrades the task suite's committed answers (benchmarks/results/tasks*.json) with today's strict checkers: per
result file and model, the passes the file stored beside the strict ones, a table for people and JSON for machines.

    python -m benchmarks.regrade                                   # every committed tasks*.json
    python -m benchmarks.regrade benchmarks/results/tasks.json --json regrade.json

A stored record keeps the answer's first ANSWER_CHARS characters and its tools' names; only a record of `--records`
keeps the tool outputs too, and none keeps the edited copy. So a question whose stored answer passes but was cut there,
or a find-then-read question whose answer passes but whose tool outputs are not kept, is `unverified` (it may pass:
only a rerun can tell), and an edit is `not regraded`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.report import write_json
from benchmarks.task_checks import Read
from benchmarks.tasks import ANSWER_CHARS, LONG_TASKS, TASKS, Task

RESULTS = Path(__file__).resolve().parent / "results"
BY_ID = {task.id: task for task in TASKS + LONG_TASKS}
STATES = ("pass", "fail", "unverified", "not regraded")


def regrade_task(record: dict[str, Any], task: Task) -> dict[str, Any]:
    """One stored task record's strict state and why."""
    row = {"id": task.id, "kind": task.kind, "stored": record["passed"]}
    if task.kind == "edit":
        return {**row, "state": "not regraded", "check": "the edited copy was not kept"}
    answer = record.get("answer")
    verdict = task.check(answer, task.repo, record.get("tool_outputs"), task.text)
    on_answer = task.check.check(answer, task.repo, asked=task.text) if isinstance(task.check, Read) else verdict
    if on_answer.passed and not verdict.passed:
        if not record.get("tools"):
            return {**row, "state": "fail", "check": "passes on the answer, but no tool was called to read it"}
        return {**row, "state": "unverified", "check": f"passes on the answer; {verdict.detail}"}
    if verdict.passed and answer is not None and len(answer) >= ANSWER_CHARS:
        return {**row, "state": "unverified", "check": f"passes on its first {ANSWER_CHARS} characters, all kept"}
    return {**row, "state": "pass" if verdict.passed else "fail", "check": verdict.detail}


def regrade_model(file: str, model: dict[str, Any]) -> dict[str, Any]:
    rows = [regrade_task(record, BY_ID[record["id"]]) for record in model["tasks"]]
    counts = {state: sum(row["state"] == state for row in rows) for state in STATES}
    return {"file": file, "model": model["name"], "tasks_run": len(rows),
            "stored_passed": sum(row["stored"] for row in rows), "strict_passed": counts["pass"],
            "unverified": counts["unverified"], "not_regraded": counts["not regraded"],
            "stored_passed_not_regraded": sum(row["stored"] for row in rows if row["state"] == "not regraded"),
            "tasks": rows}


def regrade_file(path: Path) -> list[dict[str, Any]]:
    report = json.loads(path.read_text(encoding="utf-8"))
    return [regrade_model(path.name, model) for model in report["models"]]


def regrade_table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="task suite answers as stored, regraded strictly")
    for name in ("file", "model", "stored pass", "strict pass", "unverified", "edits not regraded (stored pass)"):
        t.add_column(name, justify="left" if name in ("file", "model") else "right")
    for r in rows:
        t.add_row(r["file"], r["model"], f"{r['stored_passed']}/{r['tasks_run']}",
                  f"{r['strict_passed']}/{r['tasks_run']}", str(r["unverified"]),
                  f"{r['not_regraded']} ({r['stored_passed_not_regraded']})")
    return t


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="*", type=Path, help="result files (default: benchmarks/results/tasks*.json)")
    p.add_argument("--json", type=Path, help="write the regrade here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(width=140)
    rows = [row for path in args.files or sorted(RESULTS.glob("tasks*.json")) for row in regrade_file(path)]
    console.print(regrade_table(rows))
    write_json(args.json, {"models": rows, "answer_chars": ANSWER_CHARS}, console)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
