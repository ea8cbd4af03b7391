"""The disk tier: one verified file per full KV page under <kv dir>/<fingerprint>/, shared by processes."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch

from engine.kv.disk_dir import MODEL_FILE, make_real_dir, page_files, prune_to, remove, write_atomic
from engine.kv.page_file import (PageFileError, PageKey, decode, dtype_name, encode, file_name, page_bytes,
                              read_bounded)


class DiskTier:
    """Loads pages by (fingerprint, chain hash); writes every new full page through at once, so it outlives
    the process; a save verifies a file that exists and replaces it when damaged, so one run heals every page it
    computes. Files age by mtime (a load or a save of an existing file touches them); each process tracks the
    folder's bytes from one scan plus its own writes, and rescans to drop the least recently used files when that
    passes the cap. A page file is read only when it is a regular file of exactly its page's size: a link, FIFO or
    device at a page's name is removed unread (a directory is left), and a kv dir or model folder that is a link
    turns the tier off."""

    def __init__(self, root: Path, fingerprint: str, model_name: str, page_size: int, dtype: torch.dtype,
                 page_shape: tuple[int, ...], max_bytes: int) -> None:
        self.root = root
        self.dir = root / fingerprint
        self.fingerprint, self.page_size, self.dtype = fingerprint, page_size, dtype_name(dtype)
        self.page_shape = page_shape
        self.max_bytes = max_bytes
        self.enabled = True
        self._bytes = 0
        try:
            make_real_dir(root)
            make_real_dir(self.dir)
            record = {"name": model_name, "fingerprint": fingerprint, "dtype": self.dtype}
            write_atomic(self.dir / MODEL_FILE, json.dumps(record).encode())
            self._bytes = sum(f.size for f in page_files(root))
        except OSError as exc:
            self._disable(exc)

    def key(self, h: int) -> PageKey:
        return PageKey(self.fingerprint, h, self.page_size, self.dtype, self.page_shape)

    def load(self, h: int, token_ids: tuple[int, ...],
             rejected: list[dict]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """K and V of page h if a file holds exactly it; a bad file is deleted and added to `rejected`."""
        if not self.enabled:
            return None
        path, key = self.dir / file_name(h), self.key(h)
        try:
            kv = decode(read_bounded(path, page_bytes(key, token_ids)), key, token_ids)
        except OSError:
            return None
        except PageFileError as exc:
            rejected.append({"hash": f"{h:016x}", "reason": exc.reason})
            _discard(path)
            return None
        _touch(path)
        return kv

    def save(self, h: int, token_ids: tuple[int, ...], k: torch.Tensor, v: torch.Tensor) -> None:
        """Write page h unless a valid file for it exists (then only mark it used, so LRU pruning keeps it); a
        damaged file is replaced. A write error turns the tier off with one warning."""
        path = self.dir / file_name(h)
        replaced = self._replaced_bytes(path, h, token_ids) if self.enabled else None
        if replaced is None:
            return
        data = encode(self.key(h), token_ids, k, v)
        try:
            write_atomic(path, data)
            self._bytes += len(data) - replaced
            if self._bytes > self.max_bytes:
                self._bytes = prune_to(self.root, self.max_bytes)
        except OSError as exc:
            self._disable(exc)

    def _replaced_bytes(self, path: Path, h: int, token_ids: tuple[int, ...]) -> int | None:
        """The size of the file a save of page h must replace: 0 when there is none, the file's size when it is
        damaged; None when it holds page h intact (it is touched) or cannot be read or replaced (left as it is)."""
        key = self.key(h)
        try:
            decode(read_bounded(path, page_bytes(key, token_ids)), key, token_ids)
        except FileNotFoundError:
            return 0
        except OSError:
            return None
        except PageFileError as exc:
            if exc.reason == "special":  # never counted as a page: gone, or a directory the rename cannot replace
                return 0 if _discard(path) else None
            return _size(path)
        _touch(path)
        return None

    def _disable(self, exc: OSError) -> None:
        self.enabled = False
        where = exc.filename if isinstance(exc, NotADirectoryError) else self.dir
        warnings.warn(f"KV disk tier off for this process: cannot write {where} ({exc.strerror or exc})",
                      RuntimeWarning, stacklevel=3)


def _discard(path: Path) -> bool:
    """Unlink a page file that must not be read (a link goes, not its target); False for a directory or no access."""
    try:
        return remove(path)
    except OSError:
        return False


def _size(path: Path) -> int:
    try:
        return path.lstat().st_size
    except OSError:
        return 0


def _touch(path: Path) -> bool:
    """Set the file's access and modification times to now; False when there is no such file."""
    try:
        os.utime(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    except OSError:
        pass  # exists but not ours to touch (read-only dir, other owner): it ages, which is harmless
    return True
