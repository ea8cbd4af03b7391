"""Each decode path (docs/engine.md, "Decode paths") run by the engine's own model runner on its own pool, against
the reference: at every step, every row's logits equal what transformers' own forward computes for the row alone (its
prompt in one forward, then its tokens one at a time on transformers' cache, with PyTorch's attention). One token at
a time, a model's GGUF layers run the same block kernels as a decode step, which quantize the activations to int8,
so the reference holds the paths on the kernels as tightly as the others. The engine's stats say which path ran;
each case asserts it ran only the path it is about."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn
from transformers import DynamicCache, Qwen2Config, Qwen2ForCausalLM

from engine import Engine, EngineError, LoadedModel, Request
from engine.gguf.blocks import BLOCK_TYPES, GGUFLinear
from engine.gguf.build import kernels
from engine.model import with_cache
from tests.engine.conftest import rel_err
from tests.engine.scheduling import run_together
from tests.engine.test_decode_step import random_model
from tests.engine.gguf.test_blocks import random_blocks

BUFFERED, POOL = 8 << 20, None  # a pool the decode buffer fits in; None: one too small for it (sized per model)
TOLERANCE = 1e-4


def gguf_model(ops, dtype: torch.dtype = torch.float32) -> LoadedModel:
    """A random Qwen2 model whose every Linear layer, the LM head included, runs on random Q4_K or Q6_K blocks."""
    config = Qwen2Config(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(4)
        model = Qwen2ForCausalLM(config).eval().to(dtype)
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    for seed, (name, module) in enumerate(linears):
        kind = ("Q4_K", "Q6_K")[seed % 2]
        blocks = random_blocks(kind, module.out_features, module.in_features, seed=seed)
        bias = module.bias.detach() if module.bias is not None else None
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child,
                GGUFLinear(blocks, BLOCK_TYPES[kind], module.in_features, bias, ops))
    return LoadedModel("random-gguf", model, None, "random-gguf", torch.device("cpu"), dtype)


def reference(loaded: LoadedModel, prompt: list[int], fed: list[int]) -> torch.Tensor:
    """transformers' forward for one row: `prompt` at once, then the `fed` tokens one a call on its own cache, with
    PyTorch's attention; the last position's logits."""
    model, cache = loaded.model, DynamicCache()
    with torch.inference_mode():
        logits = None
        for chunk in [prompt, *([token] for token in fed)]:
            out = model(input_ids=torch.tensor([chunk]), **with_cache(model, cache), use_cache=True)
            logits = out.logits[0, -1]
    return logits.float()


def check_steps(loaded: LoadedModel, steps: list) -> None:
    for rows, logits, _ in steps:
        for row, (prompt, fed) in enumerate(rows):
            assert rel_err(logits[row], reference(loaded, prompt, fed)) <= TOLERANCE, (len(prompt), len(fed))


@pytest.fixture(scope="module")
def models(models_dir):
    return {"mistral": random_model("mistral"), "qwen2": random_model("qwen2"),
            "gguf": gguf_model(kernels(models_dir / "kernels"))}


def decode_steps(loaded: LoadedModel, capacity: int,
                 graphs: str = "off") -> tuple[Engine, list[tuple[list[list[int]], torch.Tensor, bool]]]:
    """Three rows of different lengths decoded together, four tokens each. Every decode step's rows (each row's
    prompt, and the tokens it has been fed so far, this step's last), the logits the runner returned for them, and
    whether the step ran on a decode buffer (else on the pool's pages). `graphs`: the engine's graphs mode ('static':
    the fixed-shape step CUDA graphs record, run eagerly)."""
    engine = Engine(loaded, page_size=16, capacity_bytes=capacity, graphs=graphs)
    runner, steps = engine.scheduler.runner, []
    decode = runner.decode

    def watched(batch):
        rows = [(list(seq.prompt), list(seq.out)) for seq in batch.seqs]
        logits = decode(batch)
        steps.append((rows, logits.clone(), batch.buffered))
        return logits

    runner.decode = watched
    rng = random.Random(13)
    prompts = [[rng.randrange(3, 512) for _ in range(n)] for n in (9, 30, 51)]
    no_eos = torch.ones(loaded.model.config.vocab_size, dtype=torch.bool)
    no_eos[2] = False
    results = run_together(engine, [Request([p], max_tokens=4, logits_mask=lambda _: no_eos) for p in prompts])
    assert all(len(result.token_ids) == 4 for result in results)
    return engine, steps


def pool_only(loaded: LoadedModel) -> int:
    """A pool of twelve pages: room for the three rows' pages, not for a decode buffer (a quarter of the pool)."""
    m = loaded.model.config
    head_dim = m.hidden_size // m.num_attention_heads
    return 12 * m.num_hidden_layers * 2 * m.num_key_value_heads * 16 * head_dim * 4


@pytest.mark.parametrize("kind, capacity, path", [
    ("mistral", BUFFERED, "transformers"),
    ("mistral", POOL, "transformers"),
    ("qwen2", BUFFERED, "lean"),
    ("qwen2", POOL, "lean"),
    ("gguf", POOL, "lean-kernels"),
    ("gguf", BUFFERED, "fused"),
    ("qwen2", BUFFERED, "graph"),  # the graphs' fixed-shape step, eagerly: a bucket of 4 rows, 256 positions
    ("gguf", BUFFERED, "graph"),
])
def test_each_decode_path_equals_the_reference(models, kind, capacity, path):
    loaded = models[kind]
    engine, steps = decode_steps(loaded, capacity or pool_only(loaded), "static" if path == "graph" else "off")
    stats = engine.stats()
    assert stats[f"decode_steps_{path}"] == stats["decode_steps"] == len(steps) >= 3
    assert stats["decode_rows"] > stats["decode_steps"]  # rows really decoded together
    assert {buffered for _, _, buffered in steps} == {capacity is BUFFERED}
    check_steps(loaded, steps)


def test_the_layer_by_layer_kernels_also_run_on_a_buffer_when_the_fused_call_cannot(models):
    """A model whose norms differ in epsilon has no fused layers: its buffered steps take the lean-kernels path."""
    loaded = models["gguf"]
    runner_fused = Engine(loaded, page_size=16, capacity_bytes=BUFFERED).scheduler.runner.lean.fused
    assert runner_fused is not None
    norm = loaded.model.model.layers[0].input_layernorm
    epsilon, norm.variance_epsilon = norm.variance_epsilon, norm.variance_epsilon * 2
    try:
        engine, steps = decode_steps(loaded, BUFFERED)
        assert engine.scheduler.runner.lean.fused is None
        assert engine.stats()["decode_steps_lean-kernels"] == engine.stats()["decode_steps"] == len(steps)
        assert {buffered for _, _, buffered in steps} == {True}
        check_steps(loaded, steps)
    finally:
        norm.variance_epsilon = epsilon


def test_graph_buckets_round_up_keep_to_their_budget_and_refuse_what_does_not_fit(models):
    """Rows round up to a power of two, capacity to at least 256 in quarter steps between powers of two; a bucket is
    reused while it fits, the least recently used goes when a new one would pass the budget, and a batch too large for
    the budget gets none (its steps then run on their own path)."""
    from engine.cuda_graphs import DecodeGraphs

    runner = Engine(models["qwen2"], page_size=16, capacity_bytes=BUFFERED).scheduler.runner
    graphs, store = DecodeGraphs(runner.lean, runner.store, budget_slots=2048, mode="static"), runner.store
    small = graphs.bucket_for(3, 100)
    assert (small.rows_count, small.capacity) == (4, 256)
    assert tuple(small.k.shape) == (store.num_layers, 4, store.kv_heads, 256, store.head_dim)
    assert graphs.bucket_for(4, 256) is small
    assert list(graphs.buckets) == [(4, 256)]
    graphs.bucket_for(1, 300)
    assert list(graphs.buckets) == [(4, 256), (1, 320)]
    graphs.bucket_for(1, 257)  # the same bucket, now the most recently used
    graphs.bucket_for(2, 600)  # 2 x 640: with both others past 2,048 slots, the least recently used goes
    assert list(graphs.buckets) == [(1, 320), (2, 640)]
    assert graphs.bucket_for(3, 1000) is None and list(graphs.buckets) == [(1, 320), (2, 640)]


def test_graphs_mode_is_checked_and_off_the_gpu_auto_records_no_graph(models):
    with pytest.raises(EngineError, match="unknown graphs mode"):
        Engine(models["qwen2"], graphs="always")
    engine, steps = decode_steps(models["qwen2"], BUFFERED, "auto")
    assert engine.scheduler.runner.graphs is None and engine.stats()["decode_steps_graph"] == 0
    assert engine.stats()["decode_steps_lean"] == len(steps) >= 3
