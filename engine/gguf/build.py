"""The build of the GGUF extension (kernels/: the block kernels, and the decode step's rotary embedding, attention and
fused layers), once per machine with PyTorch's extension builder (a C++ compiler and ninja) for the CPU it runs on,
kept under the models folder."""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from engine.errors import EngineError
from engine.hardware import cpu_flags

KERNELS = Path(__file__).parent / "kernels"
SOURCES = [KERNELS / "blocks.cpp", KERNELS / "decode_ops.cpp"]
HEADERS = [KERNELS / "kernels.h"]  # what the sources declare to each other: part of a build's key
# no fused multiply-add: widened weights match the gguf package bit for bit; OpenMP: at::parallel_for spreads a
# kernel over PyTorch's threads only in code compiled with it (serial otherwise), and the module then shares
# PyTorch's own OpenMP runtime (the same libgomp.so.1, already loaded)
CFLAGS = ["-O3", "-ffp-contract=off", "-fopenmp"]


def kernels(build_root: Path, march: str = "native") -> Any:
    """The kernels built for `march` (gcc's -march: this CPU by default), built now if they are not there yet;
    EngineError naming what is missing."""
    return _build(build_root.resolve(), march)


@functools.cache
def _build(build_root: Path, march: str) -> Any:
    from torch.utils import cpp_extension

    if shutil.which("c++") is None and shutil.which("g++") is None:
        raise EngineError("the GGUF block kernels need a C++ compiler (c++ or g++ on PATH)")
    if not cpp_extension.is_ninja_available():
        _put_ninja_on_path()
    if not cpp_extension.is_ninja_available():
        raise EngineError("the GGUF block kernels need ninja: pip install ninja")
    # one build per source, flags, CPU and torch: -march=native code must not run on another CPU
    flags = [*CFLAGS, f"-march={march}"]
    texts = [source.read_text() for source in (*SOURCES, *HEADERS)]
    key = hashlib.sha256("\n".join([*texts, *flags, platform.machine(), torch.__version__,
                                    *sorted(cpu_flags())]).encode()).hexdigest()[:16]
    folder = build_root / f"gguf_blocks_{key}"
    folder.mkdir(parents=True, exist_ok=True)
    if not any(folder.glob("*.so")):
        print("building the GGUF block kernels for this CPU (once, about 30 s) ...", file=sys.stderr, flush=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cpp_extension.load(name=f"gguf_blocks_{key}", sources=[str(source) for source in SOURCES],
                                      extra_cflags=flags, extra_ldflags=["-fopenmp"], build_directory=str(folder),
                                      verbose=False)
    except (RuntimeError, OSError, ImportError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EngineError(f"the GGUF block kernels did not build here ({first[:200]}); see {folder}") from None


def _put_ninja_on_path() -> None:
    """The ninja package's binary folder first on PATH: a venv's programs run without activating it do not have it."""
    try:
        import ninja
    except ImportError:
        return
    os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
