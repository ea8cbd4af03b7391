"""run_command: refused without allow_shell, runs in the root, reports exit codes, honours timeouts, caps output."""
from __future__ import annotations

import time
from pathlib import Path

from agentcache.tools import ToolBox
from agentcache.tools.shell import MAX_OUTPUT_BYTES


def test_refused_without_allow_shell(box: ToolBox, repo: Path) -> None:
    outcome = box.run("run_command", {"command": "touch created.txt"})
    assert outcome.is_error and "--allow-shell" in outcome.output
    assert not (repo / "created.txt").exists()
    assert "run_command" not in box.names()


def test_echo(shell_box: ToolBox) -> None:
    outcome = shell_box.run("run_command", {"command": "echo hi"})
    assert not outcome.is_error and outcome.output == "exit code: 0\nhi"


def test_runs_in_the_root_with_stderr_and_exit_code(shell_box: ToolBox) -> None:
    outcome = shell_box.run("run_command", {"command": "ls src; echo oops >&2; exit 3"})
    assert not outcome.is_error
    assert outcome.output == "exit code: 3\napp.py\nutil.py\noops"


def test_timeout_kills_the_command_quickly(shell_box: ToolBox) -> None:
    started = time.monotonic()
    outcome = shell_box.run("run_command", {"command": "echo started; sleep 5; echo never", "timeout_s": 1})
    assert time.monotonic() - started < 3
    assert outcome.is_error and "timed out after 1 s" in outcome.output
    assert "started" in outcome.output and "never" not in outcome.output


def test_timeout_out_of_range_is_refused(shell_box: ToolBox) -> None:
    outcome = shell_box.run("run_command", {"command": "echo hi", "timeout_s": 601})
    assert outcome.is_error and "'timeout_s' must be <= 600" in outcome.output
    assert "'timeout_s' must be >= 1" in shell_box.run("run_command", {"command": "true", "timeout_s": 0}).output


def test_output_is_capped_with_marker(shell_box: ToolBox) -> None:
    size = 3 * MAX_OUTPUT_BYTES
    outcome = shell_box.run("run_command", {"command": f"head -c {size} /dev/zero | tr '\\0' a; echo; echo END"})
    assert not outcome.is_error
    assert f"[truncated: {size + 5 - MAX_OUTPUT_BYTES} bytes omitted]" in outcome.output
    assert outcome.output.endswith("END")
    assert len(outcome.output) < MAX_OUTPUT_BYTES + 200
