"""The on-disk format of one KV page: magic, checksum, a JSON header (key, token ids, shape), raw K and V bytes."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

import torch
import xxhash

MAGIC = b"ACKVPG1\n"
PREFIX = struct.Struct("<8sQIQ")  # magic, xxh3-64 of header+payload, header length, payload length
SUFFIX = ".page"


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
    """A page file that must not be used; `reason` is truncated, checksum, format or foreign."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def file_name(h: int) -> str:
    return f"{h:016x}{SUFFIX}"


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def encode(key: PageKey, token_ids: tuple[int, ...], k: torch.Tensor, v: torch.Tensor) -> bytes:
    header = json.dumps(key.header(token_ids), separators=(",", ":")).encode()
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


def _raw(t: torch.Tensor) -> bytes:
    return t.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes()


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
