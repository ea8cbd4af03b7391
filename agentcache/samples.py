"""Best-of-n (`run --samples N`): N candidates of one task on the same L1+L2 prefix, run at once, so the local engine
computes the prefix once and decodes the candidates as one batch (the weights are read once per step for all).

Candidate 1 decodes as configured (greedily by default); the others sample, at the configured temperature or else at
SAMPLE_TEMPERATURE, with seeds seed+1 ... seed+N-1. Each has its own session in the repository.

- A question (read-only mode): a vote. Each answer is reduced to what it names that the task did not (paths, code
  names, numbers: `answer_keys`); each name gets a vote from every answer that gives it, and the answer whose best
  name has the most votes is the pick (the earliest on a tie).
- An edit (edit and full modes): each candidate works in its own copy of the repository and the test command runs in
  each copy. The pick is a candidate whose tests pass, else the one with the most tests passed (candidates that
  changed something first, the earliest on a tie); its changed files are written into the repository.

The run's own session gets one `samples` record: every candidate (session, seed, outcome, votes or tests, changed
files) and the pick; `agentcache inspect` shows it.
"""
from __future__ import annotations

import dataclasses
import re
import shutil
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from agentcache.agent import Agent, Outcome
from agentcache.backends import Backend
from agentcache.config import RunConfig
from agentcache.errors import AgentcacheError
from agentcache.records import requests_of
from agentcache.safe_files import STATE_DIR
from agentcache.session import Session
from agentcache.tools.files import replace_content
from agentcache.tools.shell import test_runner
from agentcache.tools.workspace import Workspace
from layers import ToolRegistry

SAMPLE_TEMPERATURE = 0.7
MAX_SAMPLES = 16  # the engine's batch (engine.DEFAULT_MAX_RUNNING)
ANSWER_KEY = re.compile(r"`([^`\n]+)`|(-?\d+(?:\.\d+)?)|([A-Za-z_][\w-]*(?:[./][\w-]+)+|[A-Za-z]*_[\w]*|"
                        r"[a-z]+[A-Z]\w*|[A-Z]\w*[a-z][A-Z]\w*)")
PASSED = re.compile(r"(\d+) passed")


@dataclass(slots=True)
class Candidate:
    index: int
    config: RunConfig
    session: Session
    root: Path
    outcome: Outcome | None = None
    error: str | None = None
    keys: list[str] = field(default_factory=list)
    tests: dict[str, Any] | None = None
    changed: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        outcome = self.outcome
        return {"index": self.index, "session_id": self.session.id, "temperature": self.config.temperature,
                "seed": self.config.seed, "reason": outcome.reason if outcome else "error",
                "answer": outcome.answer if outcome else None, "turns": outcome.turns if outcome else 0,
                "error": self.error, "keys": self.keys, "tests": self.tests, "changed": self.changed}


def candidate_configs(config: RunConfig, n: int) -> list[RunConfig]:
    """The first candidate as configured; the others sampled with their own seeds."""
    sampled = config.temperature or SAMPLE_TEMPERATURE
    return [config if i == 0 else dataclasses.replace(config, temperature=sampled, seed=config.seed + i)
            for i in range(n)]


def answer_keys(answer: str, task: str) -> list[str]:
    """What an answer names that the task does not: backticked spans, numbers, paths and code-shaped names,
    lower-cased, in order. An answer naming none of these is its own key (its words, lower-cased)."""
    mentioned = task.lower()
    keys: list[str] = []
    for match in ANSWER_KEY.finditer(answer):
        key = next(part for part in match.groups() if part).strip().strip(".,:;").lower()
        if key and key not in keys and not re.search(rf"(?<![\w.]){re.escape(key)}(?![\w])", mentioned):
            keys.append(key)
    return keys or [" ".join(answer.lower().split()).strip(".")]


def vote(candidates: list[Candidate]) -> tuple[int, dict[str, int]]:
    """The pick among the candidates that answered, and each key's votes."""
    answered = [c for c in candidates if c.outcome is not None and c.outcome.answer]
    votes = Counter(key for c in answered for key in c.keys)
    if not answered:
        return 0, {}
    best = max(answered, key=lambda c: (max(votes[k] for k in c.keys), -c.index))
    return best.index, dict(votes)


def tests_of(command: str, root: Path) -> dict[str, Any]:
    """The test command run in a candidate's copy: its exit code (None: timed out) and the tests it says passed."""
    outcome = test_runner(command)(Workspace.open(root), {})  # what the run_tests tool runs
    first = outcome.output.split("\n", 1)[0]
    code = int(first.removeprefix("exit code: ")) if first.startswith("exit code: ") else None
    passed = [int(n) for n in PASSED.findall(outcome.output)]
    return {"exit_code": code, "passed": passed[-1] if passed else 0}


def pick_by_tests(candidates: list[Candidate]) -> int:
    def rank(c: Candidate) -> tuple[bool, bool, int, int]:
        tests = c.tests or {}
        return tests.get("exit_code") == 0, bool(c.changed), tests.get("passed", 0), -c.index

    return max(candidates, key=rank).index


def changed_paths(session: Session) -> list[str]:
    """The files a candidate's recorded changes touched, in order."""
    paths: list[str] = []
    for request in requests_of(session.records()):
        result = request.tool_result or {}
        for change in [result.get("change"), *(result.get("changes") or [])]:
            if isinstance(change, dict) and isinstance(change.get("path"), str) and change["path"] not in paths:
                paths.append(change["path"])
    return paths


def copy_repo(root: Path, into: Path) -> Path:
    """A copy of the repository (without its agentcache state) for one candidate's edits; symlinks stay links."""
    target = into / root.name
    shutil.copytree(root, target, symlinks=True, ignore=shutil.ignore_patterns(STATE_DIR))
    return target


def apply_files(source: Path, root: Path, paths: list[str]) -> None:
    """The winner's changed files written into the repository, through its workspace's checks."""
    from_ws, to_ws = Workspace.open(source), Workspace.open(root)
    for path in paths:
        with from_ws.read_handle(path) as f:
            data = f.read()
        handle, _ = to_ws.write_handle(path)
        with handle:
            replace_content(handle, data)


def best_of(root: Path, task: str, backend: Backend, config: RunConfig, session: Session, registry: ToolRegistry,
            n: int, on_line: Callable[[str], Any]) -> tuple[Outcome, Candidate]:
    """Run N candidates of `task` concurrently and pick one (see the module's docstring); the record of every
    candidate and the pick goes into `session`. Returns the pick's outcome and the pick."""
    from agentcache.display import turn_line

    editing = config.mode != "read-only"
    if editing and not config.test_command:
        raise AgentcacheError("--samples above 1 in edit and full modes needs the project's test command to choose "
                              "between candidates: --test-command, or test_command: in a trusted agentcache.yaml")
    with tempfile.TemporaryDirectory(prefix="agentcache-samples-") as scratch:
        candidates = [Candidate(i, cfg, Session.create(root), copy_repo(root, Path(scratch) / str(i)) if editing
                                else root) for i, cfg in enumerate(candidate_configs(config, n))]

        def run_one(c: Candidate) -> None:
            agent = Agent(c.root, backend, c.config, c.session, registry=registry, lineage=session.id)
            agent.on_turn = lambda record: (line := turn_line(record)) and on_line(f"[{c.index + 1}] {line}")
            try:
                c.outcome = agent.run(task)
            except AgentcacheError as exc:
                c.error = str(exc)

        threads = [threading.Thread(target=run_one, args=(c,)) for c in candidates]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for c in candidates:
            if c.outcome is not None and c.outcome.answer:
                c.keys = answer_keys(c.outcome.answer, task)
            c.changed = changed_paths(c.session)
        record: dict[str, Any] = {"type": "samples", "task": task, "how": "tests" if editing else "vote"}
        if editing:
            for c in candidates:
                c.tests = tests_of(config.test_command, c.root)
                on_line(f"[{c.index + 1}] tests: exit code {c.tests['exit_code']}, {c.tests['passed']} passed")
            pick = candidates[pick_by_tests(candidates)]
            apply_files(pick.root, root, pick.changed)
            record["applied"] = pick.changed
        else:
            index, record["votes"] = vote(candidates)
            pick = candidates[index]
        record["candidates"] = [c.to_json() for c in candidates]
        record["pick"] = pick.index
        session.append(record)
    outcome = pick.outcome or Outcome("invalid_output", None, 0)
    on_line(f"samples: candidate {pick.index + 1} of {n} picked by {record['how']}")
    return outcome, pick
