"""Fixtures for layers tests: small throwaway repos, with or without git."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

PROMPTS_DIR = Path(__file__).resolve().parents[2] / "agentcache" / "prompts"  # by path: layers tests import no harness
GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false"]


def git(root: Path, *args: str) -> None:
    subprocess.run([*GIT, *args], cwd=root, check=True, capture_output=True)


def write_files(root: Path, files: dict[str, str | bytes]) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


SAMPLE = {
    "AGENTS.md": "# Agents\nRun `pytest -q`.\n",
    "README.md": "# Sample\nA sample project.\n",
    "src/app.py": "print('hi')\n",
    "skills/a.md": "# Skill A\nstep one\n",
    "skills/b.md": "# Skill B\nstep two\n",
}


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    write_files(root, SAMPLE)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "init")
    return root


@pytest.fixture
def plain_repo(tmp_path: Path) -> Path:
    root = tmp_path / "plain"
    root.mkdir()
    write_files(root, SAMPLE)
    return root
