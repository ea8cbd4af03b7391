"""Shared engine fixtures: the tiny random model for fast tests, the embedded model for real ones."""

import pytest
import torch

from engine import load_model


@pytest.fixture(scope="session")
def tiny():
    return load_model("random-tiny")


@pytest.fixture(scope="session")
def smol(models_dir):
    return load_model("smollm2-135m", cache_dir=models_dir)


def reference_logits(loaded, tokens: list[int]) -> torch.Tensor:
    """Last-position logits from plain transformers with no cache, on PyTorch's own attention (a model on GGUF
    blocks attends on the engine's kernels otherwise): the independent reference."""
    config = loaded.model.config
    engine_attention, config._attn_implementation = config._attn_implementation, "sdpa"
    try:
        with torch.inference_mode():
            ids = torch.tensor([tokens], device=loaded.device)
            return loaded.model(input_ids=ids, use_cache=False).logits[0, -1].float()
    finally:
        config._attn_implementation = engine_attention


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max())
