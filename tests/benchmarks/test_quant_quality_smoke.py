"""benchmarks.quant_quality on the random tiny chat model: teacher-forced positions line up with float32's own
forward (float32 weights decoded step by step give float32's logits), the measures on hand-made logits, and the
report's shape."""

from __future__ import annotations

import json
import math

import pytest
import torch

from benchmarks import quant_quality
from engine import load_model

TINY = "random-tiny-chat"


def test_float32_decoded_step_by_step_is_float32_at_every_position(models_dir):
    lm = load_model(TINY, dtype="float32", cache_dir=models_dir, quant="none")
    prompts = quant_quality.prompts_of(lm, 3)
    measured = quant_quality.compare(quant_quality.float32_logits(lm, prompts),
                                     quant_quality.decoded_logits(lm, prompts))
    assert measured["top1_agreement"] == 1.0 and measured["mean_kl"] < 1e-6


def test_top1_and_kl_on_hand_made_logits():
    reference = [torch.log(torch.tensor([[0.5, 0.5, 0.0 + 1e-30], [0.9, 0.1, 1e-30]]))]
    other = [torch.log(torch.tensor([[0.25, 0.75, 1e-30], [0.9, 0.1, 1e-30]]))]
    measured = quant_quality.compare(reference, other)
    assert measured["top1_agreement"] == 0.5  # the first position's argmax moved from 0 to 1
    kl_first = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert measured["mean_kl"] == pytest.approx(kl_first / 2, rel=1e-5)


def test_report(tmp_path):
    path = tmp_path / "quality.json"
    quant_quality.main(["--model", TINY, "--quants", "none,int8,gguf", "--prompts", "2", "--json", str(path)])
    (model,) = json.loads(path.read_text())["models"]
    assert [row["quant"] for row in model["rows"]] == ["none", "int8"] and "gguf" in model["skipped"]
    for row in model["rows"]:
        assert 0 <= row["top1_agreement"] <= 1 and row["mean_kl"] >= 0
    none, int8 = model["rows"]
    assert "vs_unquantized" not in none  # the unquantized row is the one the others are compared with
    assert 0 <= int8["vs_unquantized"]["top1_agreement"] <= 1 and int8["vs_unquantized"]["mean_kl"] >= 0
