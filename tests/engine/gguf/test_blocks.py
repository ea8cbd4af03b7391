"""The GGUF block kernels (engine/gguf/kernels/blocks.cpp): widened blocks against the gguf package's own
dequantization, products against float64 matmuls done here, the AVX2 and plain C++ paths against the native build,
and the default model on its own Q4_K/Q6_K blocks against its unquantized weights."""

from __future__ import annotations

import platform
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, dequantize

from engine import Engine, Request, load_model
from engine.errors import EngineError
from engine.gguf import attention
from engine.gguf import blocks as gguf_blocks
from engine.batch import BufferView
from engine.decode_step import lean_step
from engine.gguf.blocks import BLOCK_TYPES, GGUFLinear
from engine.gguf.build import kernels
from engine.model import output_cache, with_cache
from tests.engine.conftest import reference_logits, rel_err
from tests.engine.test_decode_step import lean_logits

BYTES = {"Q4_K": 144, "Q6_K": 210}
SCALE_AT = {"Q4_K": (0, 2), "Q6_K": (208,)}  # where each block keeps its float16 scales
DEFAULT = "qwen2.5-coder-1.5b"


@pytest.fixture(scope="module")
def ops(models_dir):
    return kernels(models_dir / "kernels")


def random_blocks(kind: str, rows: int, width: int, seed: int = 0) -> torch.Tensor:
    """Random blocks of `kind`: random codes, scales and minimums, float16 factors of a weight's usual size."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(rows, width // 256, BYTES[kind]), dtype=np.uint8)
    for at in SCALE_AT[kind]:
        blocks[..., at:at + 2] = rng.uniform(1e-4, 1e-2, size=(rows, width // 256)).astype(np.float16)[..., None] \
            .view(np.uint8)
    return torch.from_numpy(blocks.reshape(rows, -1))


def gguf_weights(kind: str, blocks: torch.Tensor, width: int) -> torch.Tensor:
    """The gguf package's own dequantization (numpy), float32 [rows, width]."""
    flat = dequantize(blocks.numpy().reshape(-1), GGMLQuantizationType[kind])
    return torch.from_numpy(np.ascontiguousarray(flat.reshape(blocks.shape[0], width)))


@pytest.mark.parametrize("kind", ["Q4_K", "Q6_K"])
def test_widened_blocks_are_the_gguf_packages_weights_bit_for_bit(ops, kind):
    blocks = random_blocks(kind, 48, 768)
    expected = gguf_weights(kind, blocks, 768)
    assert torch.equal(ops.dequant(blocks, BLOCK_TYPES[kind], 768, torch.float32), expected)
    assert torch.equal(ops.dequant(blocks, BLOCK_TYPES[kind], 768, torch.bfloat16), expected.bfloat16())


@pytest.mark.parametrize("kind", ["Q4_K", "Q6_K"])
def test_products_match_a_float64_matmul(ops, kind):
    width = 1024
    blocks = random_blocks(kind, 80, width, seed=1)
    weights = gguf_weights(kind, blocks, width).double()
    torch.manual_seed(0)
    # activations already on the kernel's int8 grid (integers, each block of 256 reaching 127): exact but for the
    # order of float sums
    grid = torch.randint(-127, 128, (3, width)).float()
    grid[:, ::256] = 127
    out = ops.mm_group(grid, [blocks], [BLOCK_TYPES[kind]], [None])[0]
    assert rel_err(out.double(), grid.double() @ weights.t()) <= 1e-6
    # any activations: within the int8 rounding of the activations
    x = torch.randn(3, width)
    out = ops.mm_group(x, [blocks], [BLOCK_TYPES[kind]], [None])[0]
    assert rel_err(out.double(), x.double() @ weights.t()) <= 2e-2


def test_a_group_equals_its_layers_one_by_one_and_adds_each_bias(ops):
    x = torch.randn(2, 512, dtype=torch.bfloat16)
    parts = [random_blocks("Q4_K", 64, 512, seed=2), random_blocks("Q6_K", 32, 512, seed=3),
             random_blocks("Q4_K", 16, 512, seed=4)]
    types = [BLOCK_TYPES["Q4_K"], BLOCK_TYPES["Q6_K"], BLOCK_TYPES["Q4_K"]]
    biases = [torch.randn(64), None, torch.randn(16)]
    together = ops.mm_group(x, parts, types, biases)
    for out, blocks, kind, bias in zip(together, parts, types, biases):
        alone = ops.mm_group(x, [blocks], [kind], [None])[0].float()
        assert out.dtype == torch.bfloat16 and out.shape == (2, blocks.shape[0])
        expected = alone + (bias.float() if bias is not None else 0)
        assert rel_err(out.float(), expected) <= 1e-2  # one bfloat16 rounding apart
    for row in range(2):  # several activation rows (a decode batch) compute what each computes alone
        alone = ops.mm_group(x[row:row + 1], parts, types, biases)
        assert all(torch.equal(a[0], t[row]) for a, t in zip(alone, together))


def rows_alone_and_together(ops, kind: str, rows: int, width: int = 768) -> None:
    """Every row of an `rows`-row product equals the row's own product, bit for bit (verifying a speculative draft
    computes what plain decoding does)."""
    blocks = random_blocks(kind, 40, width, seed=8)
    x = torch.randn(rows, width, generator=torch.Generator().manual_seed(rows))
    together = ops.mm_group(x, [blocks], [BLOCK_TYPES[kind]], [None])[0]
    for row in range(rows):
        assert torch.equal(ops.mm_group(x[row:row + 1], [blocks], [BLOCK_TYPES[kind]], [None])[0][0], together[row])


@pytest.mark.parametrize("kind", ["Q4_K", "Q6_K"])
@pytest.mark.parametrize("rows", [2, 3, 4, 5, 7, 9])
def test_many_rows_at_once_compute_each_rows_own_product(ops, kind, rows):
    rows_alone_and_together(ops, kind, rows)


def test_a_layer_takes_the_kernel_for_few_rows_and_a_matmul_for_many(ops):
    blocks = random_blocks("Q6_K", 40, 512, seed=5)
    weights = gguf_weights("Q6_K", blocks, 512)
    layer = GGUFLinear(blocks, BLOCK_TYPES["Q6_K"], 512, None, ops)
    for rows in (1, 64):
        x = torch.randn(rows, 512)
        assert rel_err(layer(x), x @ weights.t()) <= (2e-2 if rows == 1 else 1e-5)


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the AVX2 and plain builds are x86-64 targets")
@pytest.mark.parametrize("march", ["haswell", "x86-64"])
def test_the_avx2_and_plain_builds_compute_what_the_native_build_does(ops, models_dir, march):
    """Machines without AVX-512 run the AVX2 path, others the plain one: built here for those targets."""
    other = kernels(models_dir / "kernels", march=march)
    assert other is not ops
    x = torch.randn(2, 768)
    for kind in ("Q4_K", "Q6_K"):
        blocks = random_blocks(kind, 24, 768, seed=6)
        mine = ops.mm_group(x, [blocks], [BLOCK_TYPES[kind]], [None])[0]
        theirs = other.mm_group(x, [blocks], [BLOCK_TYPES[kind]], [None])[0]
        assert rel_err(theirs, mine) <= 1e-5
        assert torch.equal(other.dequant(blocks, BLOCK_TYPES[kind], 768, torch.float32),
                           ops.dequant(blocks, BLOCK_TYPES[kind], 768, torch.float32))
        rows_alone_and_together(other, kind, 6)
    # the decode step's attention and rotary embedding (engine/gguf/kernels/decode_ops.cpp) on those paths too
    q, keys, values = torch.randn(2, 2, 6, 128), torch.randn(2, 2, 40, 128), torch.randn(2, 2, 40, 128)
    counts = torch.tensor([40, 9])
    assert rel_err(other.attention(q, keys, values, counts, 0.1), ops.attention(q, keys, values, counts, 0.1)) <= 1e-5
    cos, sin, k = torch.randn(2, 128), torch.randn(2, 128), torch.randn(2, 2, 128)
    rotated = [q.reshape(2, 12, 128).clone(), k.clone()]
    ops.rope_(*rotated, cos, sin)
    other.rope_(q.reshape(2, 12, 128), k, cos, sin)
    assert torch.equal(q.reshape(2, 12, 128), rotated[0]) and torch.equal(k, rotated[1])


@pytest.fixture(scope="module")
def on_blocks(models_dir):
    return load_model(DEFAULT, dtype="bfloat16", cache_dir=models_dir, quant="gguf")


def test_the_default_model_runs_on_its_own_blocks(on_blocks, models_dir):
    layers = [m for m in on_blocks.model.modules() if isinstance(m, GGUFLinear)]
    kinds = {kind: sum(layer.block_type == number for layer in layers) for kind, number in BLOCK_TYPES.items()}
    assert on_blocks.quant == "gguf" and len(layers) == 28 * 7 + 1
    assert f"{kinds['Q4_K']} Q4_K, {kinds['Q6_K']} Q6_K layers" in on_blocks.quant_reason
    assert kinds["Q4_K"] > 0 and kinds["Q6_K"] > 0  # a Q4_K_M file keeps some tensors in Q6_K
    assert on_blocks.model.config._attn_implementation == attention.NAME  # attention on the kernels too
    store = next(models_dir.glob(f"{DEFAULT}-*-bfloat16-v[0-9].quant"))
    assert (store / "gguf_blocks.safetensors").is_file() and (store / "gguf_blocks.sha256").is_file()


def test_its_decode_logits_stay_near_the_unquantized_models(on_blocks):
    prompt = on_blocks.tokenizer.encode("def add(a, b):\n    return a + b\n\nprint(add(2, 3))")
    # the prefill widens the blocks (the unquantized weights); the lean step's decode runs the kernels
    logits = lean_logits(on_blocks, [prompt[:-1], prompt[:-5]], [prompt[-1], prompt[-5]])
    assert rel_err(logits[0], reference_logits(on_blocks, prompt)) <= 5e-2
    assert rel_err(logits[1], reference_logits(on_blocks, prompt[:-4])) <= 5e-2


def test_every_layer_in_one_call_computes_what_the_layer_by_layer_step_does(on_blocks):
    """The decode step's C++ loop over the layers (DecodeLayers) against the same step layer by layer from Python:
    the same kernels in the same order, so the same logits and the same keys and values in the buffer, bit for bit."""
    from transformers import DynamicCache

    model, step = on_blocks.model, lean_step(on_blocks.model)
    assert step.fused is not None
    prompts = [on_blocks.tokenizer.encode(text) for text in ("def add(a, b):\n    return a + b\n", "import os\n")]
    lengths = torch.tensor([len(p) for p in prompts])
    config = model.config
    shape = (config.num_hidden_layers, 2, config.num_key_value_heads, int(lengths.max()) + 4, step.head_dim)
    keys, values = torch.zeros(shape, dtype=on_blocks.dtype), torch.zeros(shape, dtype=on_blocks.dtype)
    with torch.inference_mode():
        for row, prompt in enumerate(prompts):
            cache = output_cache(model(input_ids=torch.tensor([prompt]), **with_cache(model, DynamicCache()),
                                       use_cache=True))
            for layer, kv in enumerate(cache.layers):
                keys[layer, row, :, : len(prompt)], values[layer, row, :, : len(prompt)] = kv.keys[0], kv.values[0]
        ids = torch.tensor([[prompts[1][-1]], [prompts[0][-1]]])
        steps = []
        for fused in (step.fused, None):
            step.fused = fused
            batch = SimpleNamespace(k=keys.clone(), v=values.clone(), rows=torch.arange(2))
            logits = step.forward(ids, lengths[:, None], BufferView(batch, lengths, int(lengths.max()) + 1), None)
            steps.append((logits, batch.k, batch.v))
    (logits, k, v), (expected, k_expected, v_expected) = steps
    assert torch.equal(logits, expected)
    assert torch.equal(k, k_expected) and torch.equal(v, v_expected)
    assert not torch.equal(k, keys)  # the step wrote its new token's keys


def warm_against_cold(loaded) -> float:
    tokens = loaded.tokenizer.encode("def count_words(text):\n    return len(text.split())\n" * 6)
    engine = Engine(loaded, page_size=16, capacity_bytes=64 << 20)
    engine.generate(Request([tokens[:50]], max_tokens=1))
    warm = engine.generate(Request([tokens[:50], tokens[50:]], max_tokens=1, return_logits=True))
    assert warm.usage.cached_tokens == 48
    return rel_err(warm.first_logits, reference_logits(loaded, tokens))


def test_warm_logits_equal_cold_on_the_blocks(on_blocks):
    assert warm_against_cold(on_blocks) <= 2e-2  # bfloat16 tolerance


def test_float32_activations_run_on_the_blocks_too(models_dir, monkeypatch):
    """CPUs without AVX-512 BF16 run float32 (dtype auto): the blocks match the float32 weights too."""
    loaded = load_model(DEFAULT, dtype="float32", cache_dir=models_dir, quant="gguf")
    assert loaded.quant == "gguf"
    # the cold reference's LM head sees one row, which the kernel runs on int8 activations: within their rounding
    assert warm_against_cold(loaded) <= 2e-2
    monkeypatch.setattr(gguf_blocks, "MM_MAX_ROWS", 0)  # every step on the widened blocks: float32's own tolerance
    assert warm_against_cold(loaded) <= 1e-4


def test_a_file_of_other_blocks_is_refused_and_auto_falls_back_to_int8(smol, models_dir):
    with pytest.raises(EngineError, match="holds .* as Q[0-9_]+.*the block kernels run Q4_K and Q6_K"):
        load_model("smollm2-135m", cache_dir=models_dir, quant="gguf")
    auto = load_model("smollm2-135m", cache_dir=models_dir, quant="auto")
    assert auto.quant in ("int8", "none") and "GGUF blocks:" in auto.quant_reason
    assert list(models_dir.glob("smollm2-135m-*-float32-v[0-9].quant/gguf_blocks.unsupported"))


def huge_page_bytes(address: int) -> int:
    """AnonHugePages of the mapping that holds `address` (/proc/self/smaps), in bytes."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if "-" in line.split()[0] and not line.split()[0].endswith(":"):
            start, end = (int(part, 16) for part in line.split()[0].split("-"))
            inside = start <= address < end
        elif inside and line.startswith("AnonHugePages:"):
            return int(line.split()[1]) * 1024
    return 0


def test_blocks_on_huge_pages_are_the_same_bytes_and_aligned():
    """The copies hold the tensors' bytes, each on a 64-byte boundary, from a 2 MB boundary on; where this kernel
    backs madvise'd memory with transparent huge pages, theirs is."""
    tensors = [random_blocks("Q4_K", rows, 768, seed=rows) for rows in (3000, 5, 4000)]
    copies = gguf_blocks.on_huge_pages(tensors)
    assert all(torch.equal(copy, tensor) for copy, tensor in zip(copies, tensors))
    assert all(copy.data_ptr() % 64 == 0 for copy in copies)
    assert all(copy.data_ptr() != tensor.data_ptr() for copy, tensor in zip(copies, tensors))
    assert copies[0].data_ptr() % gguf_blocks.HUGE_PAGE == 0
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if thp.is_file() and ("[madvise]" in thp.read_text() or "[always]" in thp.read_text()):
        assert huge_page_bytes(copies[0].data_ptr()) >= gguf_blocks.HUGE_PAGE
