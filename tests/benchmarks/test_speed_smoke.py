"""benchmarks.speed end to end on the random tiny chat model, at its --quick sizes (each row in its own process): the JSON names other tools read, a row
per method and quantization, agreement of the unquantized model with itself, ratios recomputed from the rows, and
the agent path's row."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import speed
from engine.hardware import choose_dtype
from engine.quant import int8_kernel_runs


def test_speed_report(tmp_path):
    path = tmp_path / "speed.json"
    speed.main(["--quick", "--models", "random-tiny-chat", "--quants", "none,int8,gguf", "--json", str(path)])
    report = json.loads(path.read_text())
    assert set(report["machine"]) >= {"cpu_flags", "cuda"} and isinstance(report["machine"]["cuda"], bool)
    (model,) = report["models"]
    assert model["name"] == "random-tiny-chat"
    methods = [(r["method"], r["quant"]) for r in model["rows"]]
    assert methods == [("transformers", "none"), ("agentcache", "none"), ("agentcache", "int8")]
    assert "no GGUF file" in model["skipped"]["gguf"]  # a scheme the model cannot run is said and skipped
    for row in model["rows"]:
        assert row["dtype"] == choose_dtype("auto").name
        assert set(row["prefill_tok_s"]) == {"64", "256"} and all(v > 0 for v in row["prefill_tok_s"].values())
        assert row["tpot_ms_1k"] > 0 and row["warm_turn_s"] > 0
    ours = [r for r in model["rows"] if r["method"] == "agentcache"]
    assert ours[0]["greedy_agreement"] == 1.0 and 0 <= ours[1]["greedy_agreement"] <= 1
    if choose_dtype("auto").name != "float32":
        assert 0 <= model["float32_agreement"] <= 1
    # the ratios are the default scheme's: here (no GGUF file) int8 on a CPU where PyTorch's int8 kernel runs, else none
    default = "int8" if int8_kernel_runs(torch.device("cpu"), choose_dtype("auto").dtype) else "none"
    assert model["default_quant"] == default
    (best,) = [r for r in ours if r["quant"] == default]
    plain = model["rows"][0]
    assert model["ratios"]["transformers"]["warm_turn"] == pytest.approx(best["warm_turn_s"] / plain["warm_turn_s"])
    assert model["ratios"]["transformers"]["tpot"] == pytest.approx(best["tpot_ms_1k"] / plain["tpot_ms_1k"])
    agent = model["agent_path"]  # the agent's own path (LocalBackend, the reply grammar, RunConfig's defaults)
    assert agent["tpot_ms_1k"] > 0 and agent["bare_tpot_ms"] > 0 and agent["speculate"] == "auto"
    assert agent["agent_over_bare"] == pytest.approx(agent["tpot_ms_1k"] / agent["bare_tpot_ms"])
    assert agent["prompt_tokens"] > 500 and 0 <= agent["accepted_tokens"] <= agent["drafted_tokens"]


def test_agreement_counts_tokens_before_the_first_difference():
    assert speed.agreement([[1, 2, 3, 4]], [[1, 2, 9, 4]]) == 0.5
    assert speed.agreement([[1, 2], [5, 6]], [[1, 2], [7, 6]]) == 0.5
