"""The tools that run processes in the repo root, each with a timeout, its own process group and capped output:
run_command (a shell command, mode full) and run_tests (the user's own test command, exactly)."""
from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import tempfile
from collections.abc import Callable
from typing import Any, BinaryIO

from agentcache.tools.base import ToolOutcome
from agentcache.tools.workspace import Workspace

DEFAULT_TIMEOUT_S = 30
TESTS_TIMEOUT_S = 300  # run_tests: the user's test command
MAX_OUTPUT_BYTES = 64 * 1024


def capped_output(out: BinaryIO) -> str:
    size = out.seek(0, os.SEEK_END)
    out.seek(0)
    if size <= MAX_OUTPUT_BYTES:
        return out.read().decode("utf-8", errors="replace")
    half = MAX_OUTPUT_BYTES // 2
    head = out.read(half).decode("utf-8", errors="replace")
    out.seek(size - half)
    tail = out.read().decode("utf-8", errors="replace")
    return f"{head}\n[truncated: {size - 2 * half} bytes omitted]\n{tail}"


def kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group may have exited already
        os.killpg(pid, signal.SIGKILL)


def run_process(command: str | list[str], ws: Workspace, timeout: int) -> ToolOutcome:
    """`command` in the repo root (a string through the shell, a list as it is), in its own process group, killed
    with its children at the timeout; its exit code and capped output."""
    with tempfile.TemporaryFile() as out:
        process = subprocess.Popen(command, shell=isinstance(command, str), cwd=ws.root, stdin=subprocess.DEVNULL,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code: int | None = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        kill_group(process.pid)
        process.wait()
        output = capped_output(out)
    if code is None:
        return ToolOutcome(f"timed out after {timeout} s (killed)\n{output}".rstrip("\n"), is_error=True)
    return ToolOutcome(f"exit code: {code}\n{output}".rstrip("\n"))


def run_command(ws: Workspace, args: dict[str, Any]) -> ToolOutcome:
    return run_process(args["command"], ws, args.get("timeout_s", DEFAULT_TIMEOUT_S))


def test_runner(command: str) -> Callable[[Workspace, dict[str, Any]], ToolOutcome]:
    """The run_tests tool for the user's test command: exactly that command, split like a shell line but run
    without one (no pipes, no expansions), whatever arguments the model sends."""
    argv = shlex.split(command)

    def run_tests(ws: Workspace, args: dict[str, Any]) -> ToolOutcome:
        return run_process(argv, ws, TESTS_TIMEOUT_S)

    return run_tests
