"""benchmarks.floor's pieces on a random Qwen2 model on GGUF blocks: the bytes a step reads, and the split of a
step's time into kernel calls, whose parts add up to the step."""

from __future__ import annotations

import pytest
import torch

from benchmarks import floor
from benchmarks.prefix_reuse import token_stream
from engine.gguf.blocks import GGUFLinear
from engine.gguf.build import kernels
from tests.engine.test_decode_paths import gguf_model


@pytest.fixture(scope="module")
def model(models_dir):
    return gguf_model(kernels(models_dir / "kernels"))


def test_step_bytes_are_every_blocks_bytes(model):
    sizes = floor.step_bytes(model.model)
    layers = [m for m in model.model.modules() if isinstance(m, GGUFLinear)]
    assert sizes["blocks"] == sum(m.blocks.numel() for m in layers) > 0  # uint8 blocks: a byte each
    assert sizes["other_linear"] == 0  # every Linear of this model is on blocks
    assert sizes["total"] == sizes["blocks"] + sizes["norms"]


def test_the_split_adds_up_to_the_step(model, monkeypatch):
    monkeypatch.setattr(floor, "CONTEXT", 200)
    monkeypatch.setattr(floor, "REPLY", 6)
    stream = token_stream(model, 200)
    with torch.inference_mode():
        parts = floor.split(model, stream)
    assert parts["projections_ms"] > 0 and parts["attention_ms"] > 0 and parts["rope_ms"] > 0
    named = parts["projections_ms"] + parts["attention_ms"] + parts["rope_ms"] + parts["other_ms"]
    assert named == pytest.approx(parts["step_ms"])
