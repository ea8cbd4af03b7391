"""What the task-set tests do to a repo snapshot or a copy of it: read all its Python files as an agent's tool outputs
would show them, and change one exact piece of a file."""

from __future__ import annotations

from pathlib import Path


def everything_read(repo: Path) -> list[str]:
    """Tool outputs as if the agent had read every Python file of `repo` (what a find-then-read check needs)."""
    return [p.read_text(encoding="utf-8") for p in sorted(repo.rglob("*.py")) if "__pycache__" not in p.parts]


def replace(repo: Path, path: str, old: str, new: str) -> None:
    """`old`, which must occur exactly once in the file at `path`, replaced by `new`."""
    text = (repo / path).read_text(encoding="utf-8")
    assert text.count(old) == 1, old
    (repo / path).write_text(text.replace(old, new), encoding="utf-8")
