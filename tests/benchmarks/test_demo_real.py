"""`make demo` for real: its task on the default model passes on each build of the GGUF block kernels (this CPU's,
AVX2, plain x86-64) and with int8 weights, each in a fresh process (benchmarks.demo_builds), graded by the strict
DefinedIn checker, with the tool calls on its progress lines."""
from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agentcache.config import DEFAULT_MODEL
from benchmarks.demo_builds import CONFIGS

ROOT = Path(__file__).resolve().parents[2]
X86_ONLY = {"avx2", "plain"}


@pytest.mark.parametrize("config", [config.name for config in CONFIGS])
def test_the_demo_passes_on_every_build(config: str, tmp_path: Path) -> None:
    if config in X86_ONLY and platform.machine() != "x86_64":
        pytest.skip("the AVX2 and plain builds are x86-64 targets")
    out = tmp_path / "run.json"
    env = {**os.environ, "AGENTCACHE_MODEL": DEFAULT_MODEL}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.demo_builds", "--one", config, "--work", str(tmp_path),
                           "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json.loads(out.read_text())
    assert run["model"] == DEFAULT_MODEL and run["quant"] == ("int8" if config == "int8" else "gguf")
    assert run["passed"], (run, proc.stderr[-3000:])
    calls = re.findall(r"^turn \d+: .* -> (list_files|read_file|search) \{", proc.stderr, re.M)
    assert calls, proc.stderr[-3000:]
