"""The run_command tool: a shell command in the repo root, with a timeout, its own process group and capped output."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
from typing import Any, BinaryIO

from agentcache.tools.base import ToolOutcome
from agentcache.tools.workspace import Workspace

DEFAULT_TIMEOUT_S = 30
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


def run_command(ws: Workspace, args: dict[str, Any]) -> ToolOutcome:
    timeout = args.get("timeout_s", DEFAULT_TIMEOUT_S)
    with tempfile.TemporaryFile() as out:
        process = subprocess.Popen(args["command"], shell=True, cwd=ws.root, stdin=subprocess.DEVNULL,
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
