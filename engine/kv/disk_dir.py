"""The KV directory shared by processes: one folder per model fingerprint; scan, stats, LRU prune, clear. Only real
directories and regular files are used: a link is never followed, a FIFO never opened for long."""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from engine.errors import EngineError
from engine.kv.page_file import (MAX_HEADER_BYTES, MAX_PAGE_BYTES, PREFIX, SUFFIX, PageFileError, open_regular,
                              read_bounded, split_verified)

MODEL_FILE = "model.json"
FINGERPRINT = re.compile(r"[0-9a-f]{32}")  # engine.model.model_fingerprint: xxh3-128 hex
PAGE_NAME = re.compile(r"[0-9a-f]{16}" + re.escape(SUFFIX))  # page_file.file_name
TMP_NAME = re.compile(r"\.(?:[0-9a-f]{16}" + re.escape(SUFFIX) + r"|model\.json)\.\d+\.[0-9a-f]+\.tmp")  # write_atomic
DEFAULT_DISK_BYTES = 4 << 30
STALE_TMP_S = 3600  # a temp file this old belongs to a writer that died
MAX_MODEL_FILE_BYTES = 64 << 10


class NotAKVDirError(EngineError):
    """A directory given to clear or prune holds something the KV tier did not write: nothing is deleted."""


@dataclass(slots=True)
class PageFile:
    path: Path
    size: int
    mtime_ns: int


def _folders(root: Path) -> list[Path]:
    """The fingerprint folders under root (none when root is missing)."""
    try:
        return sorted(p for p in root.iterdir() if FINGERPRINT.fullmatch(p.name) and _is_real_dir(p))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _entries(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def _is_real_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


def make_real_dir(path: Path) -> None:
    """Create path (and its parents) when missing; NotADirectoryError unless path itself is a directory: a link to
    one is not followed."""
    if not os.path.lexists(path):
        path.mkdir(parents=True, exist_ok=True)
    mode = path.lstat().st_mode
    if not stat.S_ISDIR(mode):
        what = "a symbolic link, not followed" if stat.S_ISLNK(mode) else "not a directory"
        raise NotADirectoryError(errno.ENOTDIR, what, str(path))


def _is_page(path: Path) -> bool:
    return PAGE_NAME.fullmatch(path.name) is not None


def _is_tmp(path: Path) -> bool:
    return TMP_NAME.fullmatch(path.name) is not None


def _ours(path: Path) -> bool:
    """A regular file named like a page file, a model record or one of our temp files (gone meanwhile counts)."""
    if not (_is_page(path) or _is_tmp(path) or path.name == MODEL_FILE):
        return False
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except FileNotFoundError:
        return True


def foreign_entries(root: Path) -> list[Path]:
    """What under root the KV tier did not write: anything but fingerprint folders of page files, model
    records and our temp files. A missing root is empty; a root that is not a directory is itself foreign."""
    if not root.exists():
        return []
    if not root.is_dir():
        return [root]
    foreign = []
    for entry in sorted(_entries(root)):
        if not (FINGERPRINT.fullmatch(entry.name) and _is_real_dir(entry)):
            foreign.append(entry)
            continue
        foreign.extend(sorted(p for p in _entries(entry) if not _ours(p)))
    return foreign


def check_kv_dir(root: Path) -> None:
    """Raise NotAKVDirError unless everything under root was written by the KV tier (root a link included)."""
    if root.is_symlink():
        raise NotAKVDirError(f"{root} is a symbolic link; a KV directory is not followed through one; nothing deleted")
    foreign = foreign_entries(root)
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise NotAKVDirError(f"{root} does not look like a KV cache directory: {foreign[0]}{more} is not a page "
                             "file, model record or temp file of ours; nothing deleted")


def page_files(root: Path) -> list[PageFile]:
    """Every page file under root, oldest access first; files that vanish meanwhile are skipped."""
    found = []
    for folder in _folders(root):
        for path in filter(_is_page, _entries(folder)):
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode):
                found.append(PageFile(path, st.st_size, st.st_mtime_ns))
    return sorted(found, key=lambda f: (f.mtime_ns, f.path.name))


def remove(path: Path) -> bool:
    """Unlink path; False when it was already gone."""
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False


def prune_to(root: Path, max_bytes: int) -> int:
    """Delete least recently used page files until the total is within max_bytes, files too large to be a page
    first; returns the bytes left."""
    files = sorted(page_files(root), key=lambda f: f.size <= MAX_PAGE_BYTES)
    total = sum(f.size for f in files)
    for f in files:
        if total <= max_bytes:
            break
        remove(f.path)
        total -= f.size
    return total


def prune_damaged(root: Path) -> int:
    """Delete page files that fail their checksum or name, and temp files of writers that died; returns how many.
    Refuses (NotAKVDirError) a root holding anything else."""
    check_kv_dir(root)
    removed = 0
    for folder in _folders(root):
        for path in _entries(folder):
            damaged = _is_page(path) and not _verifies(path, folder.name)
            if (damaged or (_is_tmp(path) and _stale(path))) and remove(path):
                removed += 1
    return removed


def _stale(path: Path) -> bool:
    try:
        return time.time() - path.lstat().st_mtime >= STALE_TMP_S
    except FileNotFoundError:
        return False


def _verifies(path: Path, fingerprint: str) -> bool:
    """The file's checksum holds and its header names this folder and this file (gone meanwhile counts as good)."""
    try:
        header, _ = split_verified(read_bounded(path))
    except FileNotFoundError:
        return True
    except (PageFileError, OSError):
        return False
    return header.get("fingerprint") == fingerprint and f"{header.get('hash')}{SUFFIX}" == path.name


def clear(root: Path) -> tuple[int, int]:
    """Delete our page files, model records and temp files, then the emptied fingerprint folders; returns the page
    files and bytes removed. Refuses (NotAKVDirError) a root holding anything else; root itself stays."""
    check_kv_dir(root)
    files = size = 0
    for folder in _folders(root):
        for path in filter(_ours, _entries(folder)):
            page_bytes = _size(path) if _is_page(path) else None
            if remove(path) and page_bytes is not None:
                files, size = files + 1, size + page_bytes
        try:
            folder.rmdir()
        except OSError:
            pass  # a writer put a file back meanwhile: it keeps its folder
    return files, size


def page_tokens(path: Path) -> int:
    """The page size recorded in a page file's header (0 when unreadable)."""
    try:
        f, _ = open_regular(path)
        with f:
            header_len = PREFIX.unpack(f.read(PREFIX.size))[2]
            if header_len > MAX_HEADER_BYTES:
                return 0
            return int(json.loads(f.read(header_len))["page_size"])
    except (OSError, PageFileError, ValueError, KeyError, TypeError, struct.error):
        return 0


def stats(root: Path) -> dict:
    """Files, bytes, tokens and bytes per token, in total and per model folder."""
    models = []
    for folder in _folders(root):
        files = [f for f in _entries(folder) if _is_page(f) and _is_regular(f)]
        size = sum(_size(f) for f in files)
        tokens = sum(page_tokens(f) for f in files)
        models.append({"fingerprint": folder.name, "model": _model_name(folder), "files": len(files),
                       "bytes": size, "tokens": tokens, "bytes_per_token": size / tokens if tokens else None})
    size, tokens = sum(m["bytes"] for m in models), sum(m["tokens"] for m in models)
    return {"dir": str(root), "files": sum(m["files"] for m in models), "bytes": size, "tokens": tokens,
            "bytes_per_token": size / tokens if tokens else None, "models": models}


def _size(path: Path) -> int:
    try:
        return path.lstat().st_size
    except FileNotFoundError:
        return 0


def _model_name(folder: Path) -> str | None:
    try:
        return json.loads(read_bounded(folder / MODEL_FILE, limit=MAX_MODEL_FILE_BYTES)).get("name")
    except (OSError, PageFileError, ValueError, AttributeError):
        return None


def write_atomic(path: Path, data: bytes) -> None:
    """Write through a temp file in the same folder and rename, so readers see all or nothing. The temp file is made
    anew (a stale or planted one, a link included, is removed first, never written through)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident():x}.tmp")
    try:
        remove(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        remove(tmp)
        raise
