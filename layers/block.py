"""Blocks, the unit of context: (layer, kind, key, content) with a canonical hash."""
from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

import xxhash

from layers.errors import LayerOrderError

L3_ONLY_KINDS = frozenset({"user", "assistant", "tool_call", "tool_result", "tool_error"})
EMPTY_CHAIN = bytes(16)


class Layer(enum.IntEnum):
    L1 = 1
    L2 = 2
    L3 = 3


def _field(data: bytes) -> bytes:
    return len(data).to_bytes(8, "big") + data


@dataclass(frozen=True, slots=True)
class Block:
    layer: Layer
    kind: str
    key: str
    content: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.layer, Layer):
            raise TypeError(f"layer must be a Layer, got {self.layer!r}")
        if not isinstance(self.content, bytes):
            raise TypeError(f"content must be bytes, got {type(self.content).__name__}")
        if self.kind in L3_ONLY_KINDS and self.layer is not Layer.L3:
            raise LayerOrderError(f"{self.kind} blocks belong to L3, not {self.layer.name}")

    def canonical_bytes(self) -> bytes:
        fields = (self.layer.name.encode(), self.kind.encode(), self.key.encode(), self.content)
        return b"".join(_field(f) for f in fields)

    @property
    def hash(self) -> str:
        return xxhash.xxh3_128_hexdigest(self.canonical_bytes())

    @property
    def text(self) -> str:
        return self.content.decode("utf-8")


def chain_hash(blocks: Iterable[Block]) -> str:
    h = EMPTY_CHAIN
    for block in blocks:
        h = xxhash.xxh3_128_digest(h + bytes.fromhex(block.hash))
    return h.hex()
