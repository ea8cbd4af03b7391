"""benchmarks.demo_builds names builds the kernels really have: each -march selects the code path it is named for."""

from __future__ import annotations

import platform
import shutil
import subprocess

import pytest

from benchmarks.demo_builds import CONFIGS

# the macros engine/gguf/kernels/*.cpp choose their paths by
PATHS = {"avx2": ("__AVX2__",), "plain": ()}


def defined_macros(march: str) -> set[str]:
    compiler = shutil.which("c++") or shutil.which("g++")
    out = subprocess.run([compiler, f"-march={march}", "-dM", "-E", "-x", "c++", "-"], input="", text=True,
                         capture_output=True, check=True).stdout
    return {line.split()[1] for line in out.splitlines() if line.startswith("#define __AVX")}


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the AVX2 and plain builds are x86-64 targets")
@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None, reason="no C++ compiler")
def test_the_avx2_and_plain_builds_take_the_paths_they_are_named_for() -> None:
    marches = {config.name: config.march for config in CONFIGS}
    assert {"native", "avx2", "plain"} <= set(marches)
    for name, expected in PATHS.items():
        macros = {m for m in defined_macros(marches[name]) if m in ("__AVX2__", "__AVX512F__", "__AVX512BW__")}
        assert macros == set(expected), name
