"""Context: an ordered list of blocks that enforces L1* L2* L3* and names its prefix."""
from __future__ import annotations

from collections.abc import Iterable, Iterator

from layers.block import Block, Layer, chain_hash
from layers.errors import LayerOrderError


class Context:
    def __init__(self, blocks: Iterable[Block] = ()) -> None:
        self._blocks: list[Block] = []
        self.extend(blocks)

    def append(self, block: Block) -> None:
        if self._blocks and block.layer < self._blocks[-1].layer:
            last = self._blocks[-1]
            raise LayerOrderError(
                f"cannot put {block.layer.name} block {block.kind}:{block.key} "
                f"after {last.layer.name} block {last.kind}:{last.key}"
            )
        self._blocks.append(block)

    def extend(self, blocks: Iterable[Block]) -> None:
        for block in blocks:
            self.append(block)

    @property
    def blocks(self) -> tuple[Block, ...]:
        return tuple(self._blocks)

    def layer(self, layer: Layer) -> tuple[Block, ...]:
        return tuple(b for b in self._blocks if b.layer is layer)

    @property
    def prefix(self) -> tuple[Block, ...]:
        return tuple(b for b in self._blocks if b.layer is not Layer.L3)

    @property
    def l3(self) -> tuple[Block, ...]:
        return self.layer(Layer.L3)

    @property
    def context_id(self) -> str:
        return chain_hash(self.prefix)

    def layer_hashes(self) -> dict[str, str]:
        return {layer.name: chain_hash(self.layer(layer)) for layer in Layer}

    def __iter__(self) -> Iterator[Block]:
        return iter(self._blocks)

    def __len__(self) -> int:
        return len(self._blocks)
