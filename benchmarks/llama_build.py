"""The llama.cpp peer's build, checked (`make peers` runs this after installing llama-cpp-python): a first evaluation on
a registry GGUF in a child process. Where the native build dies on it (seen: a general protection fault in
libggml-cpu.so on an Intel Xeon with AMX, llama-cpp-python 0.3.36), llama-cpp-python is rebuilt without the native
flags and without the AMX paths, with the AVX-512 paths this CPU has switched on by name, and checked again. Which
build runs is recorded in the venv (BUILD_FILE) and reported by the speed benchmarks beside the binding's version.

    python -m benchmarks.llama_build            # check, rebuild if it crashes, record
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from engine.hardware import cpu_flags

VERSION = "0.3.36"
BUILD_FILE = Path(sys.prefix) / "llama-cpp-build.json"
PROBE = """
import sys, llama_cpp
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=256, verbose=False)
llm.eval(llm.tokenize(b"def main():"))
print("ok")
"""
# llama.cpp's CMake switches for the AVX-512 extensions, by the /proc/cpuinfo flag that says the CPU has each
AVX512_SWITCHES = {"avx512f": "GGML_AVX512", "avx512vbmi": "GGML_AVX512_VBMI", "avx512_vnni": "GGML_AVX512_VNNI",
                   "avx512_bf16": "GGML_AVX512_BF16"}


def outcome(command: list[str]) -> str:
    """'ok', 'crashed: SIGNAME' (killed by a signal) or 'failed: the last line of its error output'."""
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode == 0:
        return "ok"
    if proc.returncode < 0:
        return f"crashed: {signal.Signals(-proc.returncode).name}"
    lines = proc.stderr.strip().splitlines()
    return f"failed: {lines[-1] if lines else f'exit status {proc.returncode}'}"


def cmake_args(flags: set[str]) -> str:
    """A build for this CPU without llama.cpp's native detection and without its AMX paths."""
    switches = ["GGML_NATIVE=OFF", "GGML_AVX=ON", "GGML_AVX2=ON", "GGML_FMA=ON", "GGML_F16C=ON",
                "GGML_AMX_TILE=OFF", "GGML_AMX_INT8=OFF", "GGML_AMX_BF16=OFF"]
    switches += [f"{switch}=ON" for flag, switch in AVX512_SWITCHES.items() if flag in flags]
    return " ".join(f"-D{s}" for s in switches)


def probe_gguf() -> Path:
    """The smallest installed registry model's GGUF (assembled and verified as the engine does)."""
    from agentcache.cache_dir import models_dir
    from engine import registry

    installed = sorted((m for m in registry.MODELS if m.installed()), key=lambda m: m.bytes)
    if not installed:
        raise SystemExit("no registry model is installed to check llama.cpp with: make model-smollm2-135m")
    return registry.gguf_path(installed[0], models_dir())


def main() -> int:
    gguf = probe_gguf()
    probe = [sys.executable, "-c", PROBE, str(gguf)]
    native = outcome(probe)
    record = {"version": VERSION, "build": "native", "native_check": native}
    if native != "ok":
        args = cmake_args(cpu_flags())
        print(f"llama-cpp-python's native build: {native} on its first eval; rebuilding with {args}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--force-reinstall", "--no-deps",
                        "--no-cache-dir", f"llama-cpp-python=={VERSION}"], check=True,
                       env={**os.environ, "CMAKE_ARGS": args})
        record.update(build="no-amx", cmake_args=args, check=outcome(probe))
        if record["check"] != "ok":
            BUILD_FILE.write_text(json.dumps(record, indent=1) + "\n")
            raise SystemExit(f"llama-cpp-python rebuilt without AMX still fails: {record['check']}")
    BUILD_FILE.write_text(json.dumps(record, indent=1) + "\n")
    print(f"llama-cpp-python {VERSION}: {record['build']} build, checked on {gguf.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
