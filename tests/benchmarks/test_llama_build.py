"""benchmarks.llama_build: a child killed by a signal is told apart from one that fails, and the rebuild's CMake
switches turn AMX off and name only the AVX-512 extensions the CPU has. (The build itself needs `make peers`.)"""

from __future__ import annotations

import sys

from benchmarks.llama_build import cmake_args, outcome


def test_a_crash_a_failure_and_a_success_are_told_apart():
    crash = "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"
    assert outcome([sys.executable, "-c", crash]) == "crashed: SIGSEGV"
    assert outcome([sys.executable, "-c", "raise SystemExit('no model here')"]) == "failed: no model here"
    assert outcome([sys.executable, "-c", "print('ok')"]) == "ok"


def test_the_rebuild_turns_amx_off_and_names_the_cpus_avx512_extensions():
    amx_xeon = {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16", "avx512_fp16"}
    args = cmake_args(amx_xeon).split()
    assert {"-DGGML_NATIVE=OFF", "-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF",
            "-DGGML_AVX512=ON", "-DGGML_AVX512_VNNI=ON", "-DGGML_AVX512_BF16=ON"} <= set(args)
    assert "-DGGML_AVX512_VBMI=ON" not in args  # the CPU does not say it has VBMI
    assert not any("AVX512" in a for a in cmake_args({"avx2", "fma"}).split())
