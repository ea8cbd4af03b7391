"""Fixtures for the tool tests: a small real repo in tmp_path and a ToolBox over it."""
from __future__ import annotations

from pathlib import Path

import pytest

from agentcache.tools import ToolBox


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text("def main():\n    return 42\n")
    (root / "src" / "util.py").write_text("def helper():\n    pass\n")
    (root / "README.md").write_text("# demo\nhello world\n")
    (root / ".gitignore").write_text("build/\n*.log\n")
    (root / "build").mkdir()
    (root / "build" / "out.txt").write_text("built\n")
    (root / "debug.log").write_text("log line\n")
    (root / ".env").write_text("TOKEN=hunter2\n")
    (root / "server.key").write_text("not really a key\n")
    return root


@pytest.fixture
def box(repo: Path) -> ToolBox:
    return ToolBox(repo)


@pytest.fixture
def shell_box(repo: Path) -> ToolBox:
    return ToolBox(repo, allow_shell=True)
