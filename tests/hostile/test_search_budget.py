"""search under a time budget: catastrophic backtracking stops per file and overall, and the output says where.

Each search runs in a child process with a hard wall-clock timeout, so a search that would hang fails the test
instead. Inside one line the regex module's timeout counts the process's CPU time, so the budgets are checked in
CPU seconds (on this shared machine a CPU second can take several seconds of wall time).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agentcache.tools.search import FILE_BUDGET_S, TOTAL_BUDGET_S

ROOT = Path(__file__).resolve().parents[2]
EVIL_LINE = "a" * 34 + "b"  # 35 characters
SLACK_S = 1.0  # the child's own CPU time around the pattern (listing the files, git)
HANG_S = 120  # wall-clock seconds after which a search counts as hung
CHILD = """
import json, sys, time
from agentcache.tools import ToolBox, search
repo, args, file_budget, total_budget = sys.argv[1], json.loads(sys.argv[2]), *map(float, sys.argv[3:5])
search.FILE_BUDGET_S, search.TOTAL_BUDGET_S = file_budget, total_budget
box = ToolBox(repo)
start = time.process_time()
outcome = box.run("search", args)
print(json.dumps({"output": outcome.output, "is_error": outcome.is_error, "cpu_s": time.process_time() - start}))
"""


def run_search(repo: Path, args: dict, file_budget: float = FILE_BUDGET_S,
               total_budget: float = TOTAL_BUDGET_S) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-c", CHILD, str(repo), json.dumps(args), str(file_budget), str(total_budget)]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=HANG_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"search {args['pattern']!r} hung (still running after {HANG_S} s)")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "ok.txt").write_text("a needle\n")
    (root / "slow.txt").write_text(f"needle first\n{EVIL_LINE}\nneedle after\n")
    return root


def test_the_issue_pattern_on_a_35_char_line_returns_at_once(repo: Path) -> None:
    result = run_search(repo, {"pattern": r"(a+)+$"})
    assert result["output"].startswith("(no matches in 2 files)")
    assert result["cpu_s"] < SLACK_S


def test_a_pattern_that_backtracks_forever_stops_at_the_file_budget(repo: Path) -> None:
    result = run_search(repo, {"pattern": r"(a|aa)+$|needle"})
    assert not result["is_error"]
    assert result["output"].splitlines() == [
        "[at least 2 matching lines]",  # slow.txt was not searched to its end
        "ok.txt",
        "  1: a needle",
        "slow.txt",
        "  1: needle first",
        f"[search stopped in slow.txt at line 2: the pattern ran past the {FILE_BUDGET_S:g} s per-file budget; "
        "later lines were not searched]",
    ]
    assert 0.9 * FILE_BUDGET_S <= result["cpu_s"] < FILE_BUDGET_S + SLACK_S


def test_many_slow_files_stop_at_the_overall_budget(repo: Path) -> None:
    for i in range(8):
        (repo / f"slow{i}.txt").write_text(f"{EVIL_LINE}\n")
    result = run_search(repo, {"pattern": r"(a|aa)+$"}, file_budget=0.4, total_budget=1.0)
    lines = result["output"].splitlines()
    assert re.match(r"\(no matches in \d searched files\)", lines[0])
    assert all(line.startswith("[search stopped in slow") for line in lines[1:-1])
    assert re.fullmatch(r"\[search stopped at its 1 s budget: \d+ of 10 files not searched\]", lines[-1])
    assert 0.3 <= result["cpu_s"] < 1.0 + SLACK_S
