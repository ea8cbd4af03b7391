"""The decode step's C++ rotary embedding and attention (engine/gguf/kernels/decode_ops.cpp), and the work the block
kernel call does around its products (RMSNorm before, SiLU gating and the residual add after), each against
PyTorch and transformers computing the same thing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm, apply_rotary_pos_emb

from engine.gguf.blocks import BLOCK_TYPES
from engine.gguf.build import kernels
from tests.engine.conftest import rel_err
from tests.engine.gguf.test_blocks import gguf_weights, random_blocks

DTYPES = [torch.float32, torch.bfloat16]


@pytest.fixture(scope="module")
def ops(models_dir):
    return kernels(models_dir / "kernels")


def rotary(rows: int, dim: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin [rows, dim] of positions far apart, as transformers' rotary embedding gives them (in dtype)."""
    positions = torch.tensor([3, 700, 4000][:rows], dtype=torch.float32)[:, None]
    freqs = positions * (1.0 / 10000 ** (torch.arange(0, dim, 2).float() / dim))[None]
    angles = torch.cat((freqs, freqs), dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rotary_embedding_is_transformers_bit_for_bit(ops, dtype):
    torch.manual_seed(0)
    rows, dim = 3, 128
    q, k = torch.randn(rows, 12, dim).to(dtype), torch.randn(rows, 2, dim).to(dtype)
    cos, sin = rotary(rows, dim, dtype)
    expected_q, expected_k = apply_rotary_pos_emb(q[:, :, None], k[:, :, None], cos[:, None], sin[:, None])
    ops.rope_(q, k, cos, sin)
    assert torch.equal(q, expected_q[:, :, 0]) and torch.equal(k, expected_k[:, :, 0])


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("dim, group", [(128, 6), (64, 3), (32, 2)])
def test_attention_equals_pytorchs_with_each_row_masked_to_its_length(ops, dtype, tolerance, dim, group):
    """Rows of different lengths in a buffer wider than any of them (a strided view, as the decode buffer hands
    it over), against scaled_dot_product_attention with the mask those lengths make."""
    torch.manual_seed(1)
    rows, heads, width = 3, 2, 300
    buffer_k = torch.randn(rows, heads, width + 40, dim).to(dtype)
    buffer_v = torch.randn(rows, heads, width + 40, dim).to(dtype)
    keys, values = buffer_k[:, :, :width], buffer_v[:, :, :width]
    q = (torch.randn(rows, heads, group, dim) * 2).to(dtype)
    counts = torch.tensor([width, 17, 1])
    mask = torch.zeros(rows, 1, 1, width, dtype=dtype)
    for row, count in enumerate(counts.tolist()):
        mask[row, ..., count:] = torch.finfo(dtype).min
    scale = dim ** -0.5
    expected = F.scaled_dot_product_attention(q.float(), keys.float(), values.float(), attn_mask=mask.float(),
                                              scale=scale)
    out = ops.attention(q, keys, values, counts, scale)
    assert out.dtype == dtype and out.shape == q.shape
    assert rel_err(out.float(), expected) <= tolerance
    assert rel_err(out[2].float(), values[2, :, :1].float().expand(heads, group, dim)) <= tolerance  # one position


@pytest.mark.parametrize("dim, group, rows, width", [(128, 6, 40, 300), (64, 7, 9, 9), (64, 3, 33, 70),
                                                     (128, 8, 8, 31)])
def test_rows_sharing_their_keys_equal_pytorchs_attention(ops, dim, group, rows, width):
    """Prefill's shape: many rows over one sequence's keys and values (stride 0 between rows), each attending to the
    positions up to its own. In bfloat16 on a CPU with its dot product the keys and values are repacked for it (an
    odd count, a part-filled block of keys and a group split in two all occur here); the same rows with the keys
    copied into each row take the per-row path, and both must match PyTorch."""
    torch.manual_seed(2)
    heads = 2
    keys, values = torch.randn(1, heads, width, dim).bfloat16(), torch.randn(1, heads, width, dim).bfloat16()
    q = (torch.randn(rows, heads, group, dim) * 2).bfloat16()
    counts = torch.arange(width - rows + 1, width + 1)
    expected = torch.stack([  # each row's query heads [heads, group, 1, dim] over its first `count` positions
        F.scaled_dot_product_attention(q[row].float()[:, :, None], keys[0, :, None, :count].float(),
                                       values[0, :, None, :count].float(), scale=dim ** -0.5)[:, :, 0]
        for row, count in enumerate(counts.tolist())])
    shared = ops.shared_attention(q, keys.expand(rows, -1, -1, -1), values.expand(rows, -1, -1, -1), counts,
                                  dim ** -0.5)
    copied = ops.attention(q, keys.expand(rows, -1, -1, -1).contiguous(), values.expand(rows, -1, -1, -1).contiguous(),
                           counts, dim ** -0.5)
    assert shared.dtype == torch.bfloat16 and shared.shape == q.shape
    assert rel_err(shared.float(), expected) <= 1e-2 and rel_err(copied.float(), expected) <= 1e-2
    assert rel_err(shared.float(), copied.float()) <= 1e-2
    # without `shared`, rows over one sequence's keys compute what each computes alone, bit for bit (decode, and a
    # speculative draft's verification, whose rows must equal decode steps)
    alone = torch.cat([ops.attention(q[r:r + 1], keys, values, counts[r:r + 1], dim ** -0.5) for r in range(rows)])
    assert torch.equal(ops.attention(q, keys.expand(rows, -1, -1, -1), values.expand(rows, -1, -1, -1), counts,
                                     dim ** -0.5), alone)


def test_attention_refuses_a_count_past_the_cache(ops):
    q, kv = torch.randn(1, 2, 2, 64), torch.randn(1, 2, 8, 64)
    with pytest.raises(RuntimeError, match="count out of range"):
        ops.attention(q, kv, kv, torch.tensor([9]), 0.125)


@pytest.mark.parametrize("dtype", DTYPES)
def test_norm_gating_and_residual_in_the_kernel_call_equal_the_modules_around_it(ops, dtype):
    """RMSNorm (transformers' Qwen2RMSNorm), silu(gate) * up and the residual add, done by the kernel call, against
    the same products done plainly with transformers' norm and PyTorch's ops around them."""
    torch.manual_seed(2)
    width, rows = 512, 2
    x = (torch.randn(rows, width) * 3).to(dtype)
    norm = Qwen2RMSNorm(width, eps=1e-6).to(dtype)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(width) + 0.5)
    gate, up = random_blocks("Q4_K", 64, width, seed=7), random_blocks("Q6_K", 64, width, seed=8)
    types = [BLOCK_TYPES["Q4_K"], BLOCK_TYPES["Q6_K"]]
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    with torch.no_grad():
        normed = norm(x)
    # the kernel's own products on the normed activations, then the same ops PyTorch would do on them
    plain_gate, plain_up = ops.mm_group(normed, [gate, up], types, [None, None])
    fused = ops.mm_group(x, [gate, up], types, [None, None], norm.weight, norm.variance_epsilon)
    assert rel_err(fused[0].float(), plain_gate.float()) <= tolerance
    gated = ops.mm_group(x, [gate, up], types, [None, None], norm.weight, norm.variance_epsilon, True)
    assert len(gated) == 1 and gated[0].dtype == dtype
    assert rel_err(gated[0].float(), (F.silu(plain_gate) * plain_up).float()) <= tolerance
    # and against float64 arithmetic on the gguf package's weights
    weights = gguf_weights("Q4_K", gate, width).double()
    assert rel_err(fused[0].double(), normed.double() @ weights.t()) <= 2e-2
    residual = torch.randn(rows, 64).to(dtype)
    added = ops.mm_group(x, [gate], types[:1], [None], residual=residual)[0]
    plain = ops.mm_group(x, [gate], types[:1], [None])[0]
    assert torch.equal(added, residual + plain)
