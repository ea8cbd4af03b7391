"""The on-disk format of one KV page: magic, checksum, a JSON header (key, token ids, shape), raw K and V bytes; and
reading one without following a link, waiting on a FIFO or reading more than the page can hold."""

from __future__ import annotations

import errno
import json
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch
import xxhash

MAGIC = b"ACKVPG1\n"
PREFIX = struct.Struct("<8sQIQ")  # magic, xxh3-64 of header+payload, header length, payload length
SUFFIX = ".page"
MAX_HEADER_BYTES = 1 << 20  # a header holds the key and one page of token ids: far less
MAX_PAGE_BYTES = 1 << 30  # a file larger than this is no page of any model we load


@dataclass(slots=True)
class PageKey:
    """What a page file must match to be used: model, chain hash, page geometry and dtype."""

    fingerprint: str
    hash: int
    page_size: int
    dtype: str
    shape: tuple[int, ...]  # [layers, kv_heads, page_size, head_dim] of K (and of V)

    def header(self, token_ids: tuple[int, ...]) -> dict:
        return {"fingerprint": self.fingerprint, "hash": f"{self.hash:016x}", "page_size": self.page_size,
                "dtype": self.dtype, "shape": list(self.shape), "token_ids": list(token_ids)}


class PageFileError(Exception):
    """A page file that must not be used; `reason` is truncated, size (larger than the page), special (a link,
    FIFO, device or directory: never read), checksum, format or foreign."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def file_name(h: int) -> str:
    return f"{h:016x}{SUFFIX}"


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def encode(key: PageKey, token_ids: tuple[int, ...], k: torch.Tensor, v: torch.Tensor) -> bytes:
    header = _header_bytes(key, token_ids)
    payload = _raw(k) + _raw(v)
    checksum = xxhash.xxh3_64_intdigest(header + payload)
    return PREFIX.pack(MAGIC, checksum, len(header), len(payload)) + header + payload


def decode(data: bytearray, key: PageKey, token_ids: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """K and V of a verified page file, as views of `data`; raises PageFileError on any mismatch."""
    header, payload = split_verified(data)
    if header != key.header(token_ids):
        raise PageFileError("foreign")
    dtype = getattr(torch, key.dtype)
    half = len(payload) // 2
    if half != _numel(key.shape) * torch.empty((), dtype=dtype).element_size():
        raise PageFileError("format")
    start = len(data) - len(payload)
    k = torch.frombuffer(data, dtype=torch.uint8, offset=start, count=half)
    v = torch.frombuffer(data, dtype=torch.uint8, offset=start + half, count=half)
    return k.view(dtype).reshape(key.shape), v.view(dtype).reshape(key.shape)


def page_bytes(key: PageKey, token_ids: tuple[int, ...]) -> int:
    """The exact size of the file `encode` writes for this page."""
    element = torch.empty((), dtype=getattr(torch, key.dtype)).element_size()
    return PREFIX.size + len(_header_bytes(key, token_ids)) + 2 * _numel(key.shape) * element


def open_regular(path: Path) -> tuple[BinaryIO, int]:
    """path opened for reading and its size, when path itself is a regular file; a link is not followed and a
    FIFO not waited on (PageFileError 'special'). OSError when it cannot be opened (missing, no access)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO):  # a link; a socket
            raise PageFileError("special") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise PageFileError("special")
    return os.fdopen(fd, "rb", buffering=0), st.st_size


def read_bounded(path: Path, size: int | None = None, limit: int = MAX_PAGE_BYTES) -> bytearray:
    """The bytes of path in a writable buffer (tensors view it without a copy), read only when path is a regular
    file of exactly `size` bytes, or of at most `limit` when size is None: a smaller file is truncated, a larger
    one size (a sparse terabyte is never read)."""
    f, actual = open_regular(path)
    with f:
        if size is not None and actual < size:
            raise PageFileError("truncated")
        if actual > (limit if size is None else size):
            raise PageFileError("size")
        data = bytearray(actual)
        view, got = memoryview(data), 0
        while got < actual and (n := f.readinto(view[got:])):
            got += n
    if got < actual:
        raise PageFileError("truncated")  # cut short while read
    return data


def split_verified(data: bytes | bytearray) -> tuple[dict, memoryview]:
    """Header dict and payload of a file whose magic, length and checksum hold."""
    if len(data) < PREFIX.size:
        raise PageFileError("truncated")
    magic, checksum, header_len, payload_len = PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise PageFileError("format")
    body = memoryview(data)[PREFIX.size:]
    if len(body) < header_len + payload_len:
        raise PageFileError("truncated")
    if xxhash.xxh3_64_intdigest(body) != checksum:
        raise PageFileError("checksum")
    try:
        header = json.loads(bytes(body[:header_len]))
    except ValueError:
        raise PageFileError("format") from None
    return header, body[header_len:]


def _header_bytes(key: PageKey, token_ids: tuple[int, ...]) -> bytes:
    return json.dumps(key.header(token_ids), separators=(",", ":")).encode()


def _raw(t: torch.Tensor) -> bytes:
    return t.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes()


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
