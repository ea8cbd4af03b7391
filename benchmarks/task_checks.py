"""The task suite's checkers: an agent's answer (or its edited repo copy) in, a verdict out.

Question checkers work out their expected answer from the repo's files (`expected(repo)`), so a task's text can be
checked not to contain it, and match it strictly: a path must be the only module named, a number must stand as a
whole number among few others, a word must stand whole. Edit checkers run the copy's own tests with the suite's test
for the task written beside them, in a subprocess with this Python.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?!\w)")
MAX_NUMBERS = 4  # an answer naming more distinct numbers is a list of guesses
SUITE_TEST = "tests/test_task_check.py"  # where an edit checker writes its test, at check time only
PYTEST_TIMEOUT_S = 120


@dataclass(frozen=True, slots=True)
class Verdict:
    passed: bool
    detail: str


class Checker(Protocol):
    def __call__(self, answer: str | None, repo: Path) -> Verdict: ...


def modules(repo: Path) -> list[str]:
    """The repo's source modules (every .py file outside tests/ and the harness's state), repo-relative."""
    found = (p.relative_to(repo).as_posix() for p in repo.rglob("*.py"))
    return sorted(p for p in found if p.split("/")[0] not in ("tests", ".agentcache") and "__pycache__" not in p)


def names_module(answer: str, module: str) -> bool:
    """`answer` names `module` by its path or its bare file name, not as part of another name (test_words.py)."""
    folder, _, name = module.rpartition("/")
    prefix = f"(?:{re.escape(folder)}/)?" if folder else ""
    return re.search(rf"(?<![\w.-]){prefix}{re.escape(name)}(?!\w)", answer) is not None


def whole(text: str, value: str) -> bool:
    """`value` occurs in `text` and is not part of a longer word (top_words in top_words_of is not whole)."""
    return re.search(rf"(?<!\w){re.escape(value)}(?!\w)", text) is not None


def numbers_in(text: str) -> set[str]:
    return set(NUMBER.findall(text))


@dataclass(frozen=True, slots=True)
class DefinedIn:
    """The answer names the one module that defines `name` (def or class at the top level) and no other module."""

    name: str

    def expected(self, repo: Path) -> str:
        pattern = re.compile(rf"^(?:def|class) {re.escape(self.name)}\b", re.MULTILINE)
        found = [m for m in modules(repo) if pattern.search((repo / m).read_text(encoding="utf-8"))]
        if len(found) != 1:
            raise RuntimeError(f"'{self.name}' is defined in {len(found)} modules of {repo}, not one")
        return found[0]

    def __call__(self, answer: str | None, repo: Path) -> Verdict:
        expected = self.expected(repo)
        named = [m for m in modules(repo) if names_module(answer or "", m)]
        if expected not in named:
            return Verdict(False, f"does not name {expected}")
        if len(named) > 1:
            return Verdict(False, f"names {len(named)} modules: {', '.join(named)}")
        return Verdict(True, expected)


@dataclass(frozen=True, slots=True)
class Number:
    """The answer holds the expected number as a whole number (12 is not 2, 2.5 is not 2), among at most
    MAX_NUMBERS distinct numbers."""

    value: Callable[[Path], int]

    def expected(self, repo: Path) -> str:
        return str(self.value(repo))

    def __call__(self, answer: str | None, repo: Path) -> Verdict:
        expected, found = self.expected(repo), numbers_in(answer or "")
        if expected not in found:
            return Verdict(False, f"no {expected} in the answer")
        if len(found) > MAX_NUMBERS:
            return Verdict(False, f"{len(found)} different numbers: a list of guesses")
        return Verdict(True, expected)


@dataclass(frozen=True, slots=True)
class Text:
    """The answer holds the expected text, not as part of a longer word."""

    value: Callable[[Path], str]

    def expected(self, repo: Path) -> str:
        return self.value(repo)

    def __call__(self, answer: str | None, repo: Path) -> Verdict:
        expected = self.expected(repo)
        if not whole(answer or "", expected):
            return Verdict(False, f"no {expected!r} in the answer")
        return Verdict(True, expected)


@dataclass(frozen=True, slots=True)
class AllOf:
    """The answer names every expected name, each not as part of a longer word (a long task's list)."""

    values: Callable[[Path], list[str]]

    def expected(self, repo: Path) -> list[str]:
        return self.values(repo)

    def __call__(self, answer: str | None, repo: Path) -> Verdict:
        expected = self.expected(repo)
        missing = [name for name in expected if not whole(answer or "", name)]
        if missing:
            return Verdict(False, f"misses {len(missing)} of {len(expected)}: {', '.join(missing)}")
        return Verdict(True, ", ".join(expected))


@dataclass(frozen=True, slots=True)
class Edit:
    """The copy's tests pass with `test` (the suite's check of this task, never shown to the agent) written beside
    them, and every test file the repo shipped is still there. The answer is not looked at."""

    test: str
    shipped_tests: tuple[str, ...]

    def __call__(self, answer: str | None, repo: Path) -> Verdict:
        missing = [p for p in self.shipped_tests if not (repo / p).is_file()]
        if missing:
            return Verdict(False, f"shipped tests removed: {', '.join(missing)}")
        (repo / SUITE_TEST).write_text(self.test, encoding="utf-8")
        try:
            proc = subprocess.run([sys.executable, "-B", "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
                                  cwd=repo, env=repo_env(repo), capture_output=True, text=True,
                                  timeout=PYTEST_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return Verdict(False, f"pytest ran past {PYTEST_TIMEOUT_S}s")
        lines = (proc.stdout + proc.stderr).strip().splitlines()
        return Verdict(proc.returncode == 0, lines[-1] if lines else f"pytest exit code {proc.returncode}")


def repo_env(repo: Path) -> dict[str, str]:
    """The environment for running a repo's code: its root first on the path, no bytecode written into it."""
    return {**os.environ, "PYTHONPATH": str(repo), "PYTHONDONTWRITEBYTECODE": "1"}


def python_value(code: str) -> Callable[[Path], str]:
    """What `code` (Python statements ending in an expression) evaluates to in the repo, run in a subprocess so the
    checker reads the repo's code, not a copy of it in this process."""
    *statements, expression = code.strip().split("\n")

    def value(repo: Path) -> str:
        program = "\n".join([*statements, f"print({expression})"])
        proc = subprocess.run([sys.executable, "-B", "-c", program], cwd=repo, env=repo_env(repo),
                              capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"{expression} failed in {repo}: {proc.stderr.strip()[-300:]}")
        return proc.stdout.strip()

    return value


def python_number(code: str) -> Callable[[Path], int]:
    text = python_value(code)
    return lambda repo: int(text(repo))


def file_number(path: str, pattern: str) -> Callable[[Path], int]:
    """The number `pattern`'s first group matches in the repo file at `path`."""

    def value(repo: Path) -> int:
        match = re.search(pattern, (repo / path).read_text(encoding="utf-8"))
        if match is None:
            raise RuntimeError(f"no match for {pattern!r} in {path}")
        return int(match.group(1))

    return value


def count_test_functions(repo: Path) -> int:
    """Test functions (def test_*, also methods) in the .py files under tests/, counted from their syntax trees."""
    count = 0
    for path in sorted((repo / "tests").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        count += sum(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test")
                     for node in ast.walk(tree))
    return count


def top_level_functions(repo: Path) -> list[str]:
    """The functions defined at the top level of the repo's source modules, from their syntax trees."""
    names = []
    for module in modules(repo):
        tree = ast.parse((repo / module).read_text(encoding="utf-8"))
        names += [node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    return names


def count_asserts(repo: Path) -> int:
    """assert statements in the .py files under tests/, counted from their syntax trees."""
    return sum(isinstance(node, ast.Assert) for path in sorted((repo / "tests").rglob("*.py"))
               for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))))


def modules_importing(name: str) -> Callable[[Path], list[str]]:
    """The source modules that import `name` (import or from-import, at any depth), by bare file name."""

    def value(repo: Path) -> list[str]:
        found = []
        for module in modules(repo):
            tree = ast.parse((repo / module).read_text(encoding="utf-8"))
            imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
            imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
            if name in imported:
                found.append(module.rpartition("/")[2])
        return found

    return value
