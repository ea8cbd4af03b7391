"""Prefill's attention on the CPU kernels (engine/gguf/attention.py) against PyTorch's causal attention, and a
model on GGUF blocks routed through it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engine.gguf import attention
from engine.gguf.build import kernels
from tests.engine.conftest import rel_err


class Layer:
    """What the attention function reads off transformers' attention module."""

    def __init__(self, ops) -> None:
        self.cpu_kernels = ops


@pytest.fixture(scope="module")
def layer(models_dir):
    return Layer(kernels(models_dir / "kernels"))


def causal_reference(q, k, v, scale) -> torch.Tensor:
    """PyTorch's attention, the new tokens last of the keys' positions: [batch, new, heads, dim] in float32."""
    new, width = q.shape[2], k.shape[2]
    mask = torch.arange(width)[None, :] <= torch.arange(width - new, width)[:, None]
    out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask, scale=scale,
                                         enable_gqa=True)
    return out.transpose(1, 2)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("new, width", [(7, 40), (33, 33), (1, 50)])
def test_new_tokens_over_the_cache_equal_pytorchs_causal_attention(layer, dtype, tolerance, new, width):
    torch.manual_seed(4)
    q = torch.randn(1, 6, new, 64).to(dtype)
    k, v = torch.randn(1, 2, width, 64).to(dtype), torch.randn(1, 2, width, 64).to(dtype)
    out, weights = attention.attend(layer, q, k, v, None, scaling=0.125)
    assert weights is None and out.shape == (1, new, 6, 64) and out.dtype == dtype
    assert rel_err(out.float(), causal_reference(q, k, v, 0.125)) <= tolerance


def test_what_the_kernel_does_not_take_runs_on_pytorch(layer):
    """Two sequences at once (never the engine's prefill) and float16: PyTorch's attention, the same causal rule."""
    torch.manual_seed(5)
    q, k, v = torch.randn(2, 4, 5, 32), torch.randn(2, 2, 12, 32), torch.randn(2, 2, 12, 32)
    out, _ = attention.attend(layer, q, k, v, None, scaling=0.2)
    assert rel_err(out, causal_reference(q, k, v, 0.2)) <= 1e-6
    half = [t[:1].half() for t in (q, k, v)]
    out, _ = attention.attend(layer, *half, None, scaling=0.2)
    assert out.dtype == torch.float16 and rel_err(out.float(), causal_reference(*half, 0.2)) <= 1e-3
