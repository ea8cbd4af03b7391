"""The dtype that runs fastest where the engine runs, and why: read off the device and the CPU's flags."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from engine.errors import EngineError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_CHOICES = ("auto", *DTYPES)
# CPU features with native bfloat16 matrix math; without them PyTorch emulates bfloat16 (3-5x slower than float32).
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@dataclass(frozen=True, slots=True)
class DtypeChoice:
    dtype: torch.dtype
    reason: str

    @property
    def name(self) -> str:
        return str(self.dtype).removeprefix("torch.")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags (the first `flags` line); empty where the file does not exist (not Linux)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def choose_dtype(requested: str = "auto", device: torch.device | None = None,
                 flags: frozenset[str] | None = None) -> DtypeChoice:
    """`requested` if it names a dtype; for 'auto': CUDA -> bfloat16 (float16 where the GPU lacks it), a CPU with
    AMX or AVX-512 BF16 -> bfloat16, any other CPU -> float32."""
    if requested != "auto":
        if requested not in DTYPES:
            raise EngineError(f"unknown dtype '{requested}' (known: {', '.join(DTYPE_CHOICES)})")
        return DtypeChoice(DTYPES[requested], "asked for")
    device = device or default_device()
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return DtypeChoice(torch.bfloat16, "CUDA with bfloat16 support")
        return DtypeChoice(torch.float16, "CUDA without bfloat16 support")
    found = sorted((cpu_flags() if flags is None else flags) & set(BF16_CPU_FLAGS))
    if found:
        return DtypeChoice(torch.bfloat16, f"the CPU has {' and '.join(found)}")
    return DtypeChoice(torch.float32, "the CPU has neither amx_bf16 nor avx512_bf16 (bfloat16 would be emulated)")
