"""What a task of the suite is: its text, its kind, its checker, its turns, the repo it runs on and, for a fix, the
bug planted in the agent's copy before it starts. The task lists are in `tasks_textstats.py`,
`tasks_cachetools.py` and `tasks_tomli.py`; `tasks.py` runs them."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from agentcache.errors import AgentcacheError
from benchmarks.task_checks import Checker, Edit, Number, Read, file_line, file_number

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "repo"
REPOS = Path(__file__).resolve().parent / "repos"
KINDS = ("question", "multi-step", "edit", "long")
COPY_IGNORE = shutil.ignore_patterns("__pycache__", ".pytest_cache", ".agentcache")


@dataclass(frozen=True, slots=True)
class Plant:
    """A bug planted in the agent's copy of the repo: `old`, which occurs exactly once in the file at `path`,
    replaced by `new`. The snapshot itself is never changed."""

    path: str
    old: str
    new: str

    def __call__(self, repo: Path) -> None:
        target = repo / self.path
        text = target.read_text(encoding="utf-8")
        if text.count(self.old) != 1:
            raise RuntimeError(f"{self.path} holds {text.count(self.old)} copies of {self.old!r}, not one")
        target.write_text(text.replace(self.old, self.new), encoding="utf-8")


@dataclass(frozen=True, slots=True)
class Task:
    id: str
    kind: str  # one of KINDS
    text: str
    check: Checker
    max_turns: int
    repo: Path = EXAMPLE  # the snapshot the agent gets a fresh copy of
    plant: Plant | None = None


def question(id: str, text: str, check: Checker, repo: Path = EXAMPLE) -> Task:
    return Task(id, "question", text, check, 6, repo)


def multi_step(id: str, text: str, check: Checker, repo: Path = EXAMPLE) -> Task:
    return Task(id, "multi-step", text, check, 8, repo)


def read_number(path: str, pattern: str) -> Read:
    """A number the answer must have read: `pattern`'s first group in the file at `path`, on a line a tool showed."""
    return Read(Number(file_number(path, pattern)), file_line(path, pattern))


def edit(id: str, text: str, test: str, repo: Path = EXAMPLE, plant: Plant | None = None) -> Task:
    """An edit checked by `test` (hidden from the agent) beside the repo's shipped tests; `plant` is a bug planted in
    the agent's copy for it to fix."""
    return Task(id, "edit", text, Edit(test, repo), 12, repo, plant)


def long(id: str, text: str, check: Checker) -> Task:
    """A task that reads many files: what compaction is for (`--suite long`)."""
    return Task(id, "long", text, check, 16)


def fresh_copy(repo: Path, target: Path, plant: Plant | None = None) -> Path:
    """A copy of the snapshot `repo` at `target` (which must not exist), with `plant`'s bug planted."""
    if target.exists():
        raise AgentcacheError(f"{target} already exists: give --keep an empty folder")
    shutil.copytree(repo, target, ignore=COPY_IGNORE)
    if plant is not None:
        plant(target)
    return target
