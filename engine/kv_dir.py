"""The KV directory shared by processes: one folder per model fingerprint; scan, stats, LRU prune, clear."""

from __future__ import annotations

import json
import os
import shutil
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from engine.model import cache_root
from engine.page_file import PREFIX, SUFFIX, PageFileError, split_verified

MODEL_FILE = "model.json"
DEFAULT_DISK_BYTES = 4 << 30
STALE_TMP_S = 3600  # a temp file this old belongs to a writer that died


def default_kv_dir() -> Path:
    """Where `agentcache run` keeps KV pages: <cache root>/kv."""
    return cache_root() / "kv"


@dataclass(slots=True)
class PageFile:
    path: Path
    size: int
    mtime_ns: int


def page_files(root: Path) -> list[PageFile]:
    """Every page file under root, oldest access first; files that vanish meanwhile are skipped."""
    found = []
    for path in root.glob(f"*/*{SUFFIX}"):
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        found.append(PageFile(path, st.st_size, st.st_mtime_ns))
    return sorted(found, key=lambda f: (f.mtime_ns, f.path.name))


def remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def prune_to(root: Path, max_bytes: int) -> int:
    """Delete least recently used page files until the total is within max_bytes; returns the bytes left."""
    files = page_files(root)
    total = sum(f.size for f in files)
    for f in files:
        if total <= max_bytes:
            break
        remove(f.path)
        total -= f.size
    return total


def prune_unknown(root: Path) -> int:
    """Delete every file that is not a model record, a verified page file or a live temp file; returns how many."""
    removed = 0
    for path in (p for p in root.glob("**/*") if p.is_file()):
        if path.name == MODEL_FILE or (path.suffix == SUFFIX and _verifies(path)) or _live_tmp(path):
            continue
        remove(path)
        removed += 1
    return removed


def _live_tmp(path: Path) -> bool:
    try:
        return path.suffix == ".tmp" and time.time() - path.stat().st_mtime < STALE_TMP_S
    except FileNotFoundError:
        return False


def _verifies(path: Path) -> bool:
    try:
        split_verified(path.read_bytes())
        return True
    except (PageFileError, OSError):
        return False


def clear(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)


def page_tokens(path: Path) -> int:
    """The page size recorded in a page file's header (0 when unreadable)."""
    try:
        with path.open("rb") as f:
            head = f.read(PREFIX.size)
            header_len = PREFIX.unpack(head)[2]
            return int(json.loads(f.read(header_len))["page_size"])
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return 0


def stats(root: Path) -> dict:
    """Files, bytes, tokens and bytes per token, in total and per model folder."""
    models = []
    for folder in sorted(p for p in root.glob("*") if p.is_dir()) if root.is_dir() else []:
        files = [f for f in folder.glob(f"*{SUFFIX}") if f.is_file()]
        size = sum(_size(f) for f in files)
        tokens = sum(page_tokens(f) for f in files)
        models.append({"fingerprint": folder.name, "model": _model_name(folder), "files": len(files),
                       "bytes": size, "tokens": tokens, "bytes_per_token": size / tokens if tokens else None})
    size, tokens = sum(m["bytes"] for m in models), sum(m["tokens"] for m in models)
    return {"dir": str(root), "files": sum(m["files"] for m in models), "bytes": size, "tokens": tokens,
            "bytes_per_token": size / tokens if tokens else None, "models": models}


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _model_name(folder: Path) -> str | None:
    try:
        return json.loads((folder / MODEL_FILE).read_text()).get("name")
    except (OSError, ValueError, AttributeError):
        return None


def write_atomic(path: Path, data: bytes) -> None:
    """Write through a temp file in the same folder and rename, so readers see all or nothing."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident():x}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        remove(tmp)
        raise
