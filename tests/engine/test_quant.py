"""Weight-only quantization: int8 layers against a dequantization done here, warm == cold with quantized weights, the
int8 file kept in a folder beside the converted model's (and not trusted when it changed), int4 with torchao, clear refusals."""

import pytest
import torch
from torch import nn

from agentcache.config import QUANTS, check_config, config_from
from agentcache.errors import AgentcacheError
from engine import Engine, Request, load_model
from engine.errors import EngineError
from engine.quant import PACK_MAX_ROWS, QUANT_CHOICES, Int8Linear, int8_kernel_runs, quantize
from tests.engine.conftest import reference_logits, rel_err

P = 16


def by_hand(linear: Int8Linear, x: torch.Tensor) -> torch.Tensor:
    """The layer's output from its int8 weights and scales, widened to float32 here."""
    weight = linear.weight.float() * linear.scale.float()[:, None]
    return x.float() @ weight.t() + (linear.bias.float() if linear.bias is not None else 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, PACK_MAX_ROWS, 64])
def test_int8_layers_compute_their_dequantized_weights(dtype, rows):
    torch.manual_seed(0)
    layer = nn.Linear(256, 96, bias=True).to(dtype)
    model = nn.Sequential(layer)
    x = torch.randn(rows, 256, dtype=dtype)
    exact = layer(x).float()
    choice = quantize(model, "int8", torch.device("cpu"), dtype)
    quantized = model[0]
    assert isinstance(quantized, Int8Linear) and quantized.weight.dtype == torch.int8 and choice.scheme == "int8"
    with torch.inference_mode():
        out = quantized(x).float()
    tolerance = 1e-4 if dtype == torch.float32 else 2e-2
    assert rel_err(out, by_hand(quantized, x)) <= tolerance
    assert rel_err(out, exact) <= 2e-2  # per-row int8 keeps a layer within 2% of its full-precision output


def test_the_reason_names_the_kernel_that_runs_here():
    model = nn.Sequential(nn.Linear(32, 8))
    choice = quantize(model, "int8", torch.device("cpu"), torch.float32)
    runs = int8_kernel_runs(torch.device("cpu"), torch.float32)
    assert ("_weight_int8pack_mm" in choice.reason) == runs and model[0].packed == runs


@pytest.mark.parametrize("quant", ["int8", "int4"])
def test_warm_logits_equal_cold_with_quantized_weights(quant):
    tiny = load_model("random-tiny", dtype="bfloat16", quant=quant)
    assert tiny.quant == quant
    tokens = [(7 * i) % 500 + 3 for i in range(90)]
    engine = Engine(tiny, page_size=P, capacity_bytes=8 << 20)
    engine.generate(Request([tokens[:50]], max_tokens=1))
    warm = engine.generate(Request([tokens[:50], tokens[50:]], max_tokens=1, return_logits=True))
    assert warm.usage.cached_tokens == 48
    assert rel_err(warm.first_logits, reference_logits(tiny, tokens)) <= 2e-2  # bfloat16 tolerance


def test_pages_never_mix_quantizations():
    prints = {q: load_model("random-tiny", dtype="bfloat16", quant=q).fingerprint for q in ("none", "int8", "int4")}
    assert len(set(prints.values())) == 3
    assert prints["none"] == load_model("random-tiny", dtype="bfloat16").fingerprint  # unquantized pages stay valid


def test_int8_weights_are_kept_and_a_changed_file_is_not_used(smol, models_dir):
    first = load_model("smollm2-135m", cache_dir=models_dir, quant="int8")
    stores = list(models_dir.glob("smollm2-135m-*-float32-v[0-9].quant/int8.safetensors"))
    # the converted folder holds the model alone: other engines (vLLM) load every safetensors file in it
    assert [p.name for p in models_dir.glob("smollm2-135m-*-float32-v[0-9]/*.safetensors")] == ["model.safetensors"]
    assert len(stores) == 1 and stores[0].with_suffix(".sha256").is_file()
    again = load_model("smollm2-135m", cache_dir=models_dir, quant="int8")
    head = lambda m: m.model.lm_head  # noqa: E731
    assert torch.equal(head(first).weight, head(again).weight) and torch.equal(head(first).scale, head(again).scale)
    data = bytearray(stores[0].read_bytes())
    data[-1] ^= 0xFF  # the last byte of the last tensor
    stores[0].write_bytes(bytes(data))
    rebuilt = load_model("smollm2-135m", cache_dir=models_dir, quant="int8")
    assert torch.equal(head(rebuilt).weight, head(first).weight)  # recomputed, not read from the changed file
    tokens = smol.tokenizer.encode("def count_words(text):\n    return len(text.split())\n", add_special_tokens=False)
    assert rel_err(reference_logits(rebuilt, tokens), reference_logits(smol, tokens)) <= 0.1


def test_int4_needs_bfloat16_and_an_unknown_scheme_is_refused():
    with pytest.raises(EngineError, match="int4 runs with bfloat16 activations.*--dtype bfloat16"):
        load_model("random-tiny", dtype="float32", quant="int4")
    with pytest.raises(EngineError, match="unknown quant 'int3'"):
        load_model("random-tiny", quant="int3")


def test_the_config_knows_the_engine_quants():
    assert QUANTS == QUANT_CHOICES
    assert check_config(config_from({"quant": "int8"})).quant == "int8"
    with pytest.raises(AgentcacheError, match="quant must be one of auto, none, int8, int4, gguf, got 'int3'"):
        check_config(config_from({"quant": "int3"}))


def test_auto_is_int8_on_a_cpu_where_the_kernel_runs_else_unquantized():
    model = nn.Sequential(nn.Linear(32, 8))
    choice = quantize(model, "auto", torch.device("cpu"), torch.float32)
    runs = int8_kernel_runs(torch.device("cpu"), torch.float32)
    assert choice.scheme == ("int8" if runs else "none") and isinstance(model[0], Int8Linear) == runs


def test_kept_tensors_come_back_aligned_and_equal(tmp_path):
    """A safetensors file packs tensors back to back, so a read tensor may start mid cache line (PyTorch's AVX-512
    int8 kernel crashed on one): kept tensors come back at ALIGN-byte addresses, equal to what was kept."""
    from safetensors.torch import load_file

    from engine.quant import ALIGN, kept_tensors

    tensors = {f"t{i}": torch.arange(size, dtype=torch.int8) for i, size in enumerate((3, 40, 7, 896 * 4))}
    kept_tensors(tmp_path, "odd", lambda: tensors)
    raw = load_file(str(tmp_path / "odd.safetensors"))
    assert any(t.data_ptr() % ALIGN for t in raw.values())  # the file does misalign some: the check can fail
    read = kept_tensors(tmp_path, "odd", lambda: pytest.fail("computed again instead of read"))
    assert all(t.data_ptr() % ALIGN == 0 for t in read.values())
    assert all(torch.equal(read[name], tensors[name]) for name in tensors)
