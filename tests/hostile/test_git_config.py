"""No command runs from a repository's own git configuration: each way a `.git/config` (or a file it includes) can
name a command for git to run is planted, with a stat-dirty file so that `git status` would rehash it, and every
git call the harness makes (the listing, dirty files, ignore checks, L2, a real read-only run) leaves no mark. The
control runs plain `git status` on the same repo and must leave the mark, so each case could fail."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentcache import PROMPTS_DIR
from agentcache.tools import ToolBox
from layers import build_prefix
from layers.repo import dirty_paths, list_files
from tests.hostile.repo_factory import GIT

ROOT = Path(__file__).resolve().parents[2]


def plant(repo: Path, marks: Path, case: str) -> Path:
    """The repo with `case` planted; the path its command would create."""
    mark = marks / case
    command = f"touch {mark}; cat"
    config = {
        "fsmonitor": [("core.fsmonitor", f"touch {mark}; false")],
        "fsmonitor-hook-v2": [("core.fsmonitor", f"touch {mark}; exit 1"), ("core.fsmonitorHookVersion", "2")],
        "filter-clean": [("filter.evil.clean", command)],
        "filter-process": [("filter.evil.process", f"touch {mark}; sleep 0"), ("filter.evil.required", "true")],
        "filter-included": [("include.path", str(repo / ".git" / "extra.cfg"))],
        "hooks-path": [("core.hooksPath", str(repo / "hooks"))],
        "pager": [("core.pager", f"touch {mark}; cat"), ("pager.status", f"touch {mark}; cat")],
        "diff-external": [("diff.external", f"touch {mark}; true")],
        "textconv": [("diff.evil.textconv", f"touch {mark}; cat")],
    }[case]
    (repo / ".gitattributes").write_text("*.txt filter=evil diff=evil\n")
    (repo / ".git" / "extra.cfg").write_text(f'[filter "evil"]\n\tclean = "{command}"\n')
    hooks = repo / "hooks"
    hooks.mkdir(exist_ok=True)
    for name in ("post-index-change", "pre-commit", "post-checkout"):
        (hooks / name).write_text(f"#!/bin/sh\ntouch {mark}\n")
        (hooks / name).chmod(0o755)
        (repo / ".git" / "hooks" / name).write_text(f"#!/bin/sh\ntouch {mark}\n")
        (repo / ".git" / "hooks" / name).chmod(0o755)
    for key, value in config:
        subprocess.run(["git", "config", key, value], cwd=repo, check=True)
    for name in ("a.txt", "b.txt"):  # same size, other bytes, an old mtime: git must read (and filter) them
        (repo / name).write_text((repo / name).read_text().upper())
        os.utime(repo / name, (946684800, 946684800))
    return mark


@pytest.fixture()
def repo(tmp_path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "a.txt").write_text("one\n")
    (root / "b.txt").write_text("two\n")
    (root / "README.md").write_text("# r\n")
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "init"]):
        subprocess.run([*GIT, *args], cwd=root, check=True, capture_output=True)
    return root


CASES = ["fsmonitor", "fsmonitor-hook-v2", "filter-clean", "filter-process", "filter-included", "hooks-path",
         "pager", "diff-external", "textconv"]


def control(repo: Path, case: str) -> list[str]:
    """The git commands that, run plainly, do run the planted command."""
    return {"diff-external": ["diff"], "textconv": ["diff"],
            "hooks-path": [*GIT[1:], "commit", "-qam", "x"]}.get(case, ["status"])


@pytest.mark.parametrize("case", CASES)
def test_nothing_in_the_repos_git_config_runs(repo, tmp_path, case):
    marks = tmp_path / "marks"
    marks.mkdir()
    mark = plant(repo, marks, case)
    assert list_files(repo) and dirty_paths(repo) >= {"a.txt", "b.txt"}
    box = ToolBox(repo)
    for path in ("a.txt", "b.txt", "nothing/here.txt", "README.md"):
        box.run("read_file", {"path": path})
    box.run("write_file", {"path": "c.txt", "content": "new\n"})
    box.run("search", {"pattern": "changed"})
    build_prefix(repo, PROMPTS_DIR)
    assert not mark.exists(), f"{case}: the harness ran the repo's command"
    env = {k: v for k, v in os.environ.items() if k not in ("GIT_PAGER", "PAGER")}
    if case == "pager":  # git pages only to a terminal: the control runs it under script(1)'s pseudo-terminal
        subprocess.run(["script", "-qec", "git status", "/dev/null"], cwd=repo, capture_output=True, env=env,
                       stdin=subprocess.DEVNULL, timeout=60)
    else:
        subprocess.run(["git", *control(repo, case)], cwd=repo, capture_output=True, env=env, timeout=60)
    assert mark.exists(), f"{case}: the control did not fire, so this case proves nothing"


def test_a_real_read_only_run_runs_nothing_from_the_repo(repo, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    planted = [plant(repo, marks, case) for case in ("fsmonitor", "filter-clean", "filter-included", "hooks-path")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "agentcache.cli", "run", "List the files.", "--repo", str(repo),
                             "--model", "random-tiny-chat", "--max-tokens", "16", "--max-turns", "2",
                             "--mode", "read-only"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert not any(mark.exists() for mark in planted)
