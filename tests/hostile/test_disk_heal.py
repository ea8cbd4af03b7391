"""Page files damaged eight ways after a real write-through run: one new run over the prompt replaces them all."""

import random
from pathlib import Path

import pytest
import torch

from engine import Engine, Request, load_model
from engine.kv.block_manager import chain_hashes, root_hash
from engine.kv.page_file import PageFileError, PageKey, decode, dtype_name, encode, file_name
from tests.engine.conftest import reference_logits, rel_err
from tests.engine.kv.disk_helpers import check_page_file

P = 16
PAGES = 10


@pytest.fixture(scope="module")
def tiny():
    return load_model("random-tiny")


def engine(tiny, kv: Path) -> Engine:
    return Engine(tiny, page_size=P, capacity_bytes=8 << 20, disk_dir=kv)


def run(e: Engine, tokens: list[int]):
    return e.generate(Request([tokens], max_tokens=1, return_logits=True))


def page_key(tiny, fingerprint: str, h: int) -> PageKey:
    shape = (tiny.num_layers, tiny.kv_heads, P, tiny.head_dim)
    return PageKey(fingerprint, h, P, dtype_name(tiny.dtype), shape)


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def damages(tiny, h: int, chunk: tuple[int, ...], other: bytes) -> list:
    """Eight ways to damage the file of page h; `other` is another page's valid file."""
    zeros = torch.zeros(page_key(tiny, "", h).shape, dtype=tiny.dtype)
    foreign_model = encode(page_key(tiny, "f" * 32, h), chunk, zeros, zeros)  # valid, for another model
    return [
        lambda d: d[:-100],  # truncated payload
        lambda d: b"",  # empty
        lambda d: d[:20],  # cut inside the prefix
        lambda d: flip(d, len(d) - 7),  # one payload bit
        lambda d: flip(d, 40),  # one header bit
        lambda d: b"NOTAPAGE" + d[8:],  # wrong magic
        lambda d: other,  # a valid file whose header names another page
        lambda d: foreign_model,
    ]


def test_one_run_heals_every_damaged_page_it_touches_and_the_next_loads_them_all(tiny, tmp_path):
    kv = tmp_path / "kv"
    rng = random.Random(5)
    tokens = [rng.randrange(100, 512) for _ in range(PAGES * P + 1)]
    hashes = chain_hashes(tokens, P, root_hash(tiny.fingerprint, None))
    chunks = [tuple(tokens[i * P : (i + 1) * P]) for i in range(PAGES)]
    paths = [kv / tiny.fingerprint / file_name(h) for h in hashes]
    run(engine(tiny, kv), tokens)
    original = [p.read_bytes() for p in paths]
    damaged = range(1, 9)  # pages 0 and 9 stay intact
    for i in damaged:
        paths[i].write_bytes(damages(tiny, hashes[i], chunks[i], original[0])[i - 1](original[i]))
        with pytest.raises(PageFileError):
            decode(bytearray(paths[i].read_bytes()), page_key(tiny, tiny.fingerprint, hashes[i]), chunks[i])
    intact_inode = paths[9].stat().st_ino

    healing = run(engine(tiny, kv), tokens)
    assert healing.usage.disk_tokens == P  # page 0 loads, page 1 is refused: the rest is computed
    assert [r["hash"] for r in healing.trace.disk_rejected] == [f"{hashes[1]:016x}"]
    assert rel_err(healing.first_logits, reference_logits(tiny, tokens)) <= 1e-4
    for i, (path, h, chunk) in enumerate(zip(paths, hashes, chunks)):  # every file valid, on its own
        assert check_page_file(path)["token_ids"] == list(chunk)
        k, v = decode(bytearray(path.read_bytes()), page_key(tiny, tiny.fingerprint, h), chunk)
        k0, v0 = decode(bytearray(original[i]), page_key(tiny, tiny.fingerprint, h), chunk)
        assert torch.allclose(k, k0, atol=1e-5) and torch.allclose(v, v0, atol=1e-5), i
    assert paths[9].stat().st_ino == intact_inode  # a valid file is kept, not rewritten

    warm = run(engine(tiny, kv), tokens)
    assert warm.usage.disk_tokens == warm.usage.cached_tokens == PAGES * P and warm.trace.disk_rejected == []
    assert rel_err(warm.first_logits, reference_logits(tiny, tokens)) <= 1e-4
