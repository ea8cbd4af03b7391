"""The lean decode step against transformers' own forward, for each architecture it takes, and the decode batch's
two ways to hold KV (its buffer, or the pool's pages gathered per step) against plain greedy decoding."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import DynamicCache, LlamaConfig, MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

from engine import Engine, LoadedModel, Request, load_model
from engine.decode_step import lean_step
from engine.model import output_cache, with_cache
from tests.engine.conftest import reference_logits, rel_err
from tests.engine.scheduling import greedy_reference, run_together

SMALL = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=2048, bos_token_id=1, eos_token_id=2, pad_token_id=0)


def random_model(kind: str) -> LoadedModel:
    """A random-weight model of an architecture: Qwen2 (biased q/k/v projections) or Mistral (no lean step)."""
    config_class, model_class = {"qwen2": (Qwen2Config, Qwen2ForCausalLM),
                                 "mistral": (MistralConfig, MistralForCausalLM)}[kind]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        model = model_class(config_class(**SMALL)).eval()
        if kind == "qwen2":  # transformers initialises biases at zero: make them count
            for layer in model.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    torch.nn.init.normal_(proj.bias, std=0.5)
    return LoadedModel(f"random-{kind}", model, None, f"random-{kind}", torch.device("cpu"), torch.float32)


class PaddedCache:
    """The test's own KV for rows of different lengths: [rows, kv_heads, longest + 1, head_dim] per layer, each new
    token written at its row's length."""

    def __init__(self, caches: list[DynamicCache], lengths: list[int]) -> None:
        self.lengths, width = lengths, max(lengths) + 1
        self.layers = []
        for layer in range(len(caches[0].layers)):
            keys = torch.zeros((len(caches), *caches[0].layers[layer].keys.shape[1:2], width,
                                caches[0].layers[layer].keys.shape[-1]))
            values = keys.clone()
            for row, cache in enumerate(caches):
                keys[row, :, : lengths[row]] = cache.layers[layer].keys[0]
                values[row, :, : lengths[row]] = cache.layers[layer].values[0]
            self.layers.append((keys, values))

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.layers[layer_idx]
        for row, length in enumerate(self.lengths):
            k[row, :, length], v[row, :, length] = keys[row, :, 0], values[row, :, 0]
        return k.to(keys.dtype), v.to(values.dtype)


def lean_logits(loaded: LoadedModel, prompts: list[list[int]], next_ids: list[int]) -> torch.Tensor:
    """Each prompt prefilled by transformers, then one lean step for all rows at once (masked to each row)."""
    model, caches = loaded.model, []
    with torch.inference_mode():
        for prompt in prompts:
            out = model(input_ids=torch.tensor([prompt]), **with_cache(model, DynamicCache()), use_cache=True)
            caches.append(output_cache(out))
        lengths = [len(p) for p in prompts]
        width = max(lengths) + 1
        mask = torch.zeros((len(prompts), 1, 1, width), dtype=loaded.dtype)
        for row, length in enumerate(lengths):
            mask[row, ..., length + 1:] = torch.finfo(loaded.dtype).min
        positions = torch.tensor(lengths)[:, None]
        step = lean_step(model)
        return step.forward(torch.tensor(next_ids)[:, None], positions, PaddedCache(caches, lengths), mask)


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_lean_step_logits_equal_transformers_for_rows_of_different_lengths(kind, tiny):
    loaded = tiny if kind == "llama" else random_model(kind)
    assert loaded.model.config.model_type == kind and lean_step(loaded.model) is not None
    rng = random.Random(7)
    prompts = [[rng.randrange(3, 512) for _ in range(n)] for n in (5, 37, 64)]
    next_ids = [rng.randrange(3, 512) for _ in prompts]
    logits = lean_logits(loaded, prompts, next_ids)
    for row, prompt in enumerate(prompts):
        assert rel_err(logits[row], reference_logits(loaded, prompt + [next_ids[row]])) <= 1e-4


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-4), (torch.bfloat16, 3e-2)])
def test_lean_step_logits_equal_transformers_on_the_real_model(models_dir, dtype, tolerance):
    loaded = load_model("smollm2-135m", dtype=dtype, cache_dir=models_dir)
    prompt = loaded.tokenizer.encode("def add(a, b):\n    return a + b\n\nprint(add(2, 3))")
    logits = lean_logits(loaded, [prompt[:-1], prompt[:-5]], [prompt[-1], prompt[-5]])
    assert rel_err(logits[0], reference_logits(loaded, prompt)) <= tolerance
    assert rel_err(logits[1], reference_logits(loaded, prompt[:-4])) <= tolerance


def test_an_architecture_without_a_lean_step_decodes_through_transformers():
    loaded = random_model("mistral")
    assert lean_step(loaded.model) is None
    rng = random.Random(11)
    prompts = [[rng.randrange(3, 512) for _ in range(n)] for n in (9, 30, 51)]
    engine = Engine(loaded, page_size=16, capacity_bytes=8 << 20)
    results = run_together(engine, [Request([p], max_tokens=12) for p in prompts])
    assert engine.stats()["decode_rows"] > engine.stats()["decode_steps"]  # rows really decoded together
    for prompt, result in zip(prompts, results):
        assert result.token_ids == greedy_reference(loaded.model, prompt, 12, {2})


@pytest.mark.parametrize("capacity, buffered", [(8 << 20, True), (96 << 10, False)])
def test_buffered_and_gathered_decoding_both_equal_plain_greedy(tiny, capacity, buffered):
    """A pool of 96 KiB is too small for the buffer of three rows (it may take a quarter of the pool): those rows
    gather their pages each step."""
    rng = random.Random(5)
    prompts = [[rng.randrange(3, 512) for _ in range(n)] for n in (20, 45, 70)]
    engine = Engine(tiny, page_size=16, capacity_bytes=capacity)
    seen: set[bool] = set()

    def watch(ids: list[int]) -> None:
        if engine.scheduler.batch is not None:
            seen.add(engine.scheduler.batch.buffered)

    requests = [Request([p], max_tokens=10, logits_mask=watch) for p in prompts]
    results = run_together(engine, requests)
    assert seen == {buffered}
    for prompt, result in zip(prompts, results):
        assert result.token_ids == greedy_reference(tiny.model, prompt, 10, {2})


@pytest.mark.parametrize("capacity, buffered", [(8 << 20, True), (96 << 10, False)])
def test_the_replies_kv_reaches_the_pool_for_the_next_turn(tiny, capacity, buffered):
    """The next turn resends prompt + reply: its cached pages cover the reply, and its logits equal plain
    transformers' on the whole text, so the KV each step wrote for the reply is the reply's."""
    rng = random.Random(9)
    prompts = [[rng.randrange(3, 512) for _ in range(n)] for n in (21, 40)]
    engine = Engine(tiny, page_size=16, capacity_bytes=capacity)
    seen: set[bool] = set()

    no_eos = torch.ones(512, dtype=torch.bool)
    no_eos[2] = False  # every reply is 24 tokens

    def watch(ids: list[int]) -> torch.Tensor:
        if engine.scheduler.batch is not None:
            seen.add(engine.scheduler.batch.buffered)
        return no_eos

    results = run_together(engine, [Request([p], max_tokens=24, logits_mask=watch) for p in prompts])
    assert seen == {buffered}
    for prompt, result in zip(prompts, results):
        text = prompt + result.token_ids + [rng.randrange(3, 512)]
        turn = engine.generate(Request([text], max_tokens=1, return_logits=True))
        assert turn.usage.cached_tokens == (len(prompt) + 23) // 16 * 16 > len(prompt)
        assert rel_err(turn.first_logits, reference_logits(tiny, text)) <= 1e-4
