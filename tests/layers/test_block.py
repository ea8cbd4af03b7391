import dataclasses

import pytest
import xxhash

from layers import Block, Layer, LayerOrderError, chain_hash


def test_hash_is_xxh3_128_over_length_prefixed_fields():
    block = Block(Layer.L1, "system", "system.md", b"hello\n")
    parts = [b"L1", b"system", b"system.md", b"hello\n"]
    expected = b"".join(len(p).to_bytes(8, "big") + p for p in parts)
    assert block.hash == xxhash.xxh3_128_hexdigest(expected)
    assert len(block.hash) == 32


def test_concatenation_does_not_collide():
    a = Block(Layer.L2, "doc", "ab", b"c")
    b = Block(Layer.L2, "doc", "a", b"bc")
    c = Block(Layer.L2, "doca", "", b"bc")
    assert len({a.hash, b.hash, c.hash}) == 3


def test_every_field_changes_the_hash():
    base = Block(Layer.L2, "doc", "README.md", b"x\n")
    variants = [
        dataclasses.replace(base, layer=Layer.L1),
        dataclasses.replace(base, kind="skill"),
        dataclasses.replace(base, key="AGENTS.md"),
        dataclasses.replace(base, content=b"y\n"),
    ]
    assert len({base.hash, *(v.hash for v in variants)}) == 5


def test_chain_hash_matches_its_definition():
    blocks = [Block(Layer.L1, "system", "s", b"1"), Block(Layer.L2, "doc", "d", b"2")]
    h = bytes(16)
    for block in blocks:
        h = xxhash.xxh3_128_digest(h + bytes.fromhex(block.hash))
    assert chain_hash(blocks) == h.hex()
    assert chain_hash([]) == "0" * 32
    assert chain_hash(blocks) != chain_hash(reversed(blocks))


def test_blocks_are_frozen_and_typed():
    block = Block(Layer.L1, "system", "s", b"1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        block.content = b"2"
    with pytest.raises(TypeError):
        Block(Layer.L1, "system", "s", "not bytes")
    with pytest.raises(TypeError):
        Block(1, "system", "s", b"1")


@pytest.mark.parametrize("kind", ["user", "assistant", "tool_call", "tool_result", "tool_error"])
@pytest.mark.parametrize("layer", [Layer.L1, Layer.L2])
def test_l3_kinds_cannot_sit_in_the_prefix(kind, layer):
    with pytest.raises(LayerOrderError):
        Block(layer, kind, "k", b"x")
