"""The engine on a GPU, in one run (`make gpu-check`): its CUDA paths checked, then its speed on the default model's
shape against plain transformers and against the memory floor. It prints one JSON object.

The GPU machine has PyTorch, Triton and transformers and no network, and model weights cannot travel there, so the
models are random weights in the registry models' shapes (SHAPES: the default 1.5B's and SmolLM2's, as the engine
converts them; a test checks them against the converted configurations). What the engine needs and the machine
lacks travels as wheels (`make gpu-wheels` fills WHEELS from PyPI); `preflight` checks versions, says in one line what
is missing, and installs it from those wheels into a folder of its own.

Checks (each pass or fail with what it saw), on SmolLM2's shape in float32 so that equal means equal:
  warm_equals_cold    a prompt's first logits, cold and then with its prefix cached
  pool_eviction       a pool too small for every prompt evicts pages, and answers stay those of a fresh engine
  batched_vs_single   rows of different lengths decoded as one batch give each row's tokens alone
  host_tier           pages evicted to host memory come back (GPU -> host -> GPU), logits as cold
  salts               a different salt shares no KV; the same salt does
  graphs_vs_eager     CUDA graphs replay the fixed-shape step: the same logits as that step run eagerly, bit for bit,
                      and the same tokens as the engine without graphs
Speed, on the 1.5B's shape in bfloat16: prefill tok/s at 2,048 tokens; time per token at 1K and 8K tokens of context
at batch 1 and 16, with graphs and without; the warm turn (2,000 cached + 200 new + 50 out); the same measured on
plain transformers (its generate, its DynamicCache, no prefix reuse); and the floor: the bytes a step reads (weights
and KV) over the copy bandwidth measured here.

    make gpu-check                          # the run, written to benchmarks/results/gpu-check.json
    python -m benchmarks.gpu_check --quick           # tiny sizes: a smoke run of every part (also on a CPU)
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
WHEELS = REPO / ".gpu-wheels"  # ignored by git; `make gpu-wheels` fills it, the device run carries it
# what importing the engine needs beyond PyTorch, with the versions the engine is tested on
NEEDS = (("transformers", ">=5.23,<5.25"), ("xxhash", ">=3"), ("safetensors", ">=0.4"))
SHAPES: dict[str, dict[str, Any]] = {
    "qwen2.5-coder-1.5b": {"model_type": "qwen2", "hidden_size": 1536, "intermediate_size": 8960,
                           "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2,
                           "vocab_size": 151936, "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
                           "rope_theta": 1000000.0, "tie_word_embeddings": False, "bos_token_id": 151643,
                           "eos_token_id": 151645},
    "smollm2-135m": {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                     "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64, "vocab_size": 49152,
                     "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
                     "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2},
}


def version_ok(version: str | None, spec: str) -> bool:
    """Whether `version` (None: not installed) meets `spec` (comma-separated >= and < bounds on dotted numbers)."""
    if version is None:
        return False
    for bound in spec.split(","):
        op, number = (">=", bound[2:]) if bound.startswith(">=") else ("<", bound[1:])
        have, want = numbers(version), numbers(number)
        if (op == ">=" and have < want) or (op == "<" and have >= want):
            return False
    return True


def numbers(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("+")[0].split(".") if p.isdigit())


def wheel_versions(wheels: Path) -> dict[str, str]:
    """Distribution -> version of the wheels in `wheels` (names normalised as pip's metadata spells them)."""
    found = {}
    for wheel in wheels.glob("*.whl") if wheels.is_dir() else []:
        name, version = wheel.name.split("-")[:2]
        found[name.lower().replace("_", "-")] = version
    return found


def to_install(wheels: dict[str, str]) -> list[str]:
    """The wheels to install: each whose distribution is missing here or older than the wheel, and every one the
    engine needs (NEEDS) whose installed version is outside its bounds. Exits with one line where a need has no
    wheel."""
    chosen = {name for name, version in wheels.items()
              if _version(name) is None or numbers(_version(name)) < numbers(version)}
    lacking = []
    for name, spec in NEEDS:
        if not version_ok(_version(name), spec):
            if name in wheels and version_ok(wheels[name], spec):
                chosen.add(name)
            else:
                lacking.append(f"{name}{spec} (installed: {_version(name) or 'none'})")
    if lacking:
        raise SystemExit(f"gpu-check: missing {', '.join(lacking)}, and no wheel for it in {WHEELS.name}/: run "
                         "`make gpu-wheels` where PyPI is reachable and carry that folder")
    return sorted(f"{name}=={wheels[name]}" for name in chosen)


def preflight(wheels: Path = WHEELS) -> dict[str, Any]:
    """Versions of what the run needs; what is missing or too old installed from `wheels` (without an index) into a
    folder of its own, put first on sys.path."""
    installing = to_install(wheel_versions(wheels))
    if installing:
        target = Path(tempfile.mkdtemp(prefix="gpu-check-site-"))
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                        "--find-links", str(wheels), "--target", str(target), *installing], check=True)
        sys.path.insert(0, str(target))
        importlib.invalidate_caches()
    import torch

    return {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
            "triton": _version("triton"), **{name: _version(name) for name, _ in NEEDS},
            "installed_from_wheels": installing}


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def random_model(name: str, dtype: Any, device: Any, layers: int | None = None) -> Any:
    """Random weights in registry model `name`'s shape (`layers`: fewer layers, for a quick run), as a LoadedModel."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    from engine import LoadedModel

    shape = dict(SHAPES[name])
    rope_theta = shape.pop("rope_theta")
    config_class = {"qwen2": Qwen2Config, "llama": LlamaConfig}[shape.pop("model_type")]
    config = config_class(**shape, rope_parameters={"rope_type": "default", "rope_theta": rope_theta})
    if layers is not None:
        config.num_hidden_layers = layers
    config._attn_implementation = "sdpa"
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(7)
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
    return LoadedModel(f"random-{name}", model, None, f"random-{name}-{dtype}", device, dtype)


def prompts(vocab: int, lengths: list[int], seed: int) -> list[list[int]]:
    import random

    rng = random.Random(seed)
    return [[rng.randrange(3, vocab) for _ in range(n)] for n in lengths]


def no_eos(lm: Any) -> Callable[[list[int]], Any]:
    import torch

    allowed = torch.ones(lm.config.vocab_size, dtype=torch.bool, device=lm.device)  # on the device: no copy a step
    allowed[sorted(lm.eos_token_ids)] = False
    return lambda ids: allowed


def rel_err(a: Any, b: Any) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max())


# ---- checks --------------------------------------------------------------------------------------------------------

def check(name: str, passed: bool, **seen: Any) -> dict[str, Any]:
    return {"check": name, "passed": bool(passed), **seen}


def checks(lm: Any, quick: bool) -> list[dict[str, Any]]:
    """Every check on model `lm`; one that raises fails with its error."""
    out = []
    for run in (warm_equals_cold, pool_eviction, batched_vs_single, host_tier, salts, graphs_vs_eager):
        try:
            out.append(run(lm, quick))
        except Exception as error:  # noqa: BLE001 - a failed check is a result, the others still run
            out.append(check(run.__name__, False, error=f"{type(error).__name__}: {error}"))
    return out


def warm_equals_cold(lm: Any, quick: bool) -> dict[str, Any]:
    from engine import Engine, Request

    engine = Engine(lm, page_size=16)
    (prefix, tail) = prompts(lm.config.vocab_size, [256, 40], seed=1)
    cold = engine.generate(Request([prefix + tail], max_tokens=1, return_logits=True))
    fresh = Engine(lm, page_size=16)  # with only the prefix cached
    fresh.generate(Request([prefix], max_tokens=1))
    warm = fresh.generate(Request([prefix + tail], max_tokens=1, return_logits=True))
    err = rel_err(warm.first_logits, cold.first_logits)
    return check("warm_equals_cold", warm.usage.cached_tokens == 256 and err <= 1e-4 and
                 warm.token_ids == cold.token_ids, cached_tokens=warm.usage.cached_tokens, rel_err=err)


def pool_eviction(lm: Any, quick: bool) -> dict[str, Any]:
    from engine import Engine, Request

    texts = prompts(lm.config.vocab_size, [300, 300, 300, 300], seed=2)
    small = Engine(lm, page_size=16, capacity_bytes=page_bytes(lm) * 48, host_bytes=0)  # 48 pages: two prompts
    def reply(engine: Any, text: list[int]) -> list[int]:
        return engine.generate(Request([text], max_tokens=6, logits_mask=no_eos(lm))).token_ids

    got = [reply(small, t) for t in texts + texts[:1]]
    want = [reply(Engine(lm, page_size=16, host_bytes=0), t) for t in texts + texts[:1]]
    evictions = small.stats()["evictions"]
    return check("pool_eviction", got == want and evictions > 0, evictions=evictions)


def page_bytes(lm: Any, page_size: int = 16) -> int:
    return 2 * lm.num_layers * lm.kv_heads * lm.head_dim * lm.dtype.itemsize * page_size


def batched_vs_single(lm: Any, quick: bool) -> dict[str, Any]:
    from engine import Engine, Request
    from tests.engine.scheduling import run_together

    texts = prompts(lm.config.vocab_size, [9, 130, 257, 600], seed=3)
    engine = Engine(lm, page_size=16, capacity_bytes=1 << 30)
    together = run_together(engine, [Request([t], max_tokens=12, logits_mask=no_eos(lm)) for t in texts])
    alone = [Engine(lm, page_size=16).generate(Request([t], max_tokens=12, logits_mask=no_eos(lm))).token_ids
             for t in texts]
    stats = engine.stats()
    return check("batched_vs_single", [r.token_ids for r in together] == alone and stats["decode_rows"] >
                 stats["decode_steps"], decode_steps=stats["decode_steps"], decode_rows=stats["decode_rows"])


def host_tier(lm: Any, quick: bool) -> dict[str, Any]:
    from engine import Engine, Request

    texts = prompts(lm.config.vocab_size, [320, 320, 320], seed=4)
    engine = Engine(lm, page_size=16, capacity_bytes=page_bytes(lm) * 32, host_bytes=1 << 30)  # 32 pages: one prompt
    cold = engine.generate(Request([texts[0]], max_tokens=1, return_logits=True))
    for text in texts[1:]:
        engine.generate(Request([text], max_tokens=1))
    back = engine.generate(Request([texts[0]], max_tokens=1, return_logits=True))
    err = rel_err(back.first_logits, cold.first_logits)
    return check("host_tier", back.usage.host_tokens > 0 and err <= 1e-4, host_tokens=back.usage.host_tokens,
                 cached_tokens=back.usage.cached_tokens, rel_err=err, on_cuda=lm.device.type == "cuda")


def salts(lm: Any, quick: bool) -> dict[str, Any]:
    from engine import Engine, Request

    engine = Engine(lm, page_size=16)
    (text,) = prompts(lm.config.vocab_size, [200], seed=5)
    cached = [engine.generate(Request([text], max_tokens=1, salt=salt)).usage.cached_tokens for salt in ("a", "b", "a")]
    return check("salts", cached[0] == 0 and cached[1] == 0 and cached[2] > 0, cached_tokens=cached)


def graphs_vs_eager(lm: Any, quick: bool) -> dict[str, Any]:
    """The same batch on three engines: graphs captured and replayed ('auto' on CUDA), the fixed-shape step run
    eagerly ('static'), and no graphs ('off'). Each decode step's logits are recorded."""
    from engine import Engine, Request
    from tests.engine.scheduling import run_together

    texts = prompts(lm.config.vocab_size, [50, 190, 333], seed=6)
    runs = {}
    for mode in ("auto", "static", "off"):
        engine = Engine(lm, page_size=16, capacity_bytes=1 << 30, graphs=mode)
        runner, steps = engine.scheduler.runner, []
        decode = runner.decode
        runner.decode = lambda batch, decode=decode, steps=steps: steps.append(decode(batch)) or steps[-1]
        results = run_together(engine, [Request([t], max_tokens=10, logits_mask=no_eos(lm)) for t in texts])
        runs[mode] = {"tokens": [r.token_ids for r in results], "steps": steps, "stats": engine.stats()}
    graphed, static = runs["auto"], runs["static"]
    identical = len(graphed["steps"]) == len(static["steps"]) and all(
        a.shape == b.shape and bool((a == b).all()) for a, b in zip(graphed["steps"], static["steps"]))
    on_cuda = lm.device.type == "cuda"  # off CUDA, 'auto' records no graph: only the tokens can be compared
    captured = graphed["stats"]["graph_captures"]
    return check("graphs_vs_eager", graphed["tokens"] == runs["off"]["tokens"] == static["tokens"] and
                 (not on_cuda or (identical and captured > 0)), graph_captures=captured, bit_identical=identical,
                 graph_steps=graphed["stats"]["decode_steps_graph"], on_cuda=on_cuda,
                 max_abs_diff_vs_off=max(float((a - b).abs().max()) for a, b in
                                         zip(graphed["steps"], runs["off"]["steps"])))


# ---- speed ---------------------------------------------------------------------------------------------------------

def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def copy_gb_s(device: Any, size: int) -> float:
    """Bytes read and written per second by a device-to-device copy of `size` bytes (median of 10)."""
    import torch

    src = torch.empty(size, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    times = []
    for _ in range(10):
        sync(device)
        start = time.perf_counter()
        dst.copy_(src)
        sync(device)
        times.append(time.perf_counter() - start)
    return 2 * size / statistics.median(times) / 1e9


def engine_speed(lm: Any, contexts: list[int], batches: list[int], graphs: str, new: int) -> dict[str, Any]:
    """Time per output token at each context and batch size, on one engine with graphs `graphs`: the rows arrive
    together and are all prefilled before the first decode step (an unlimited prefill chunk), so from the last row's
    first token to the last row's end the batch decodes `new` - 1 steps. Each measurement follows an untimed run of
    the same shape, which records its graph."""
    from engine import Engine, Request
    from tests.engine.scheduling import run_together

    out = {}
    engine = Engine(lm, page_size=16, capacity_bytes=pool_bytes(lm, max(contexts) + new, max(batches)), graphs=graphs,
                    prefill_chunk=1 << 30, max_running=max(batches))
    for context in contexts:
        for batch in batches:
            for seed in (1, 2):  # the first run captures the bucket's graph; the second is timed
                texts = prompts(lm.config.vocab_size, [context] * batch, seed=seed * 100_000 + context + batch)
                requests = [Request([t], max_tokens=new, logits_mask=no_eos(lm)) for t in texts]
                results = run_together(engine, requests) if batch > 1 else [engine.generate(requests[0])]
            decoding = max(r.timings.total_s for r in results) - max(r.timings.ttft_s for r in results)
            out[f"tpot_ms_{context}_b{batch}"] = round(decoding / (new - 1) * 1000, 3)
    return out


def pool_bytes(lm: Any, tokens: int, rows: int) -> int:
    """A pool with room for `rows` sequences of `tokens` and a graph bucket's buffer (a quarter of it) for them."""
    return page_bytes(lm) // 16 * rows * (tokens + 1024) * 6


def engine_prefill_and_warm(lm: Any, prefill: int, cached: int, added: int, out: int) -> dict[str, Any]:
    """Prefill tok/s of a `prefill`-token prompt (after one of the same length, untimed), and the warm turn: `added`
    new tokens after `cached` ones already in the pool, and `out` tokens out (after one untimed turn of the same
    shape, which records its graph)."""
    from engine import Engine, Request

    engine = Engine(lm, page_size=16, capacity_bytes=pool_bytes(lm, prefill + cached + added, 2))
    warmup, text = prompts(lm.config.vocab_size, [prefill, prefill], seed=11)
    engine.generate(Request([warmup], max_tokens=1))
    prefill_tok_s = prefill / engine.generate(Request([text], max_tokens=1)).timings.ttft_s
    for seed in (12, 13):
        prefix, tail = prompts(lm.config.vocab_size, [cached, added], seed=seed)
        engine.generate(Request([prefix], max_tokens=1))
        start = time.perf_counter()
        turn = engine.generate(Request([prefix, tail], max_tokens=out, logits_mask=no_eos(lm)))
        warm_turn_s = time.perf_counter() - start
    return {f"prefill_tok_s_{prefill}": round(prefill_tok_s, 1), "warm_turn_s": round(warm_turn_s, 4),
            "warm_turn_cached_tokens": turn.usage.cached_tokens}


def transformers_speed(lm: Any, contexts: list[int], batches: list[int], prefill: int, cached: int, added: int,
                       out: int, new: int) -> dict[str, Any]:
    """Plain transformers on the same weights: generate() greedy on its DynamicCache, nothing reused between calls.
    Time per token = (time for `new` tokens - time for one) / (new - 1); prefill = the one-token call's time."""
    import torch

    model, device = lm.model, lm.device

    def timed(ids: Any, tokens: int) -> float:
        sync(device)
        start = time.perf_counter()
        with torch.inference_mode():
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens, min_new_tokens=tokens,
                           do_sample=False, eos_token_id=None, pad_token_id=0)
        sync(device)
        return time.perf_counter() - start

    def batch_ids(lengths: list[int], seed: int) -> Any:
        return torch.tensor(prompts(lm.config.vocab_size, lengths, seed), device=device)

    timed(batch_ids([64], 0), 2)  # warm-up
    row = {}
    for context in contexts:
        for batch in batches:
            ids = batch_ids([context] * batch, context + batch)
            one, many = timed(ids, 1), timed(ids, new)
            row[f"tpot_ms_{context}_b{batch}"] = round((many - one) / (new - 1) * 1000, 3)
    row[f"prefill_tok_s_{prefill}"] = round(prefill / timed(batch_ids([prefill], 12), 1), 1)
    row["warm_turn_s"] = round(timed(batch_ids([cached + added], 13), out), 4)  # no prefix reuse: all prefilled
    return row


def floor_ms(lm: Any, context: int, batch: int, gb_s: float) -> float:
    """The least time a decode step can take: every weight read once and each row's KV once, at `gb_s`."""
    weights = sum(p.numel() * p.element_size() for p in lm.model.parameters())
    embed = lm.model.get_input_embeddings().weight
    weights -= embed.numel() * embed.element_size()  # a step reads `batch` rows of the embedding, not all of it
    kv = 2 * lm.num_layers * lm.kv_heads * lm.head_dim * lm.dtype.itemsize * context * batch
    return round((weights + kv) / gb_s / 1e6, 4)


def speed(lm: Any, quick: bool) -> dict[str, Any]:
    contexts, batches = ([64, 200], [1, 4]) if quick else ([1024, 8192], [1, 16])
    prefill, cached, added, out, new = (128, 100, 20, 5, 8) if quick else (2048, 2000, 200, 50, 64)
    gb_s = copy_gb_s(lm.device, (1 << 24) if quick else (1 << 31))
    ours = {"graphs": engine_speed(lm, contexts, batches, "auto", new),
            "no_graphs": engine_speed(lm, contexts, batches, "off", new),
            **engine_prefill_and_warm(lm, prefill, cached, added, out)}
    theirs = transformers_speed(lm, contexts, batches, prefill, cached, added, out, new)
    floors = {f"tpot_ms_{c}_b{b}": floor_ms(lm, c, b, gb_s) for c in contexts for b in batches}
    ratios = {**{f"{key}_over_floor": round(ours["graphs"][key] / floors[key], 3) for key in floors},
              **{f"{key}_over_transformers": round(ours["graphs"][key] / theirs[key], 3) for key in floors},
              **{f"{key}_graphs_over_eager": round(ours["graphs"][key] / ours["no_graphs"][key], 3) for key in floors},
              f"prefill_{prefill}_over_transformers": round(ours[f"prefill_tok_s_{prefill}"] /
                                                            theirs[f"prefill_tok_s_{prefill}"], 3),
              "warm_turn_over_transformers": round(ours["warm_turn_s"] / theirs["warm_turn_s"], 3)}
    return {"copy_gb_s": round(gb_s, 3), "agentcache": ours, "transformers": theirs, "floor_ms": floors,
            "ratios": ratios, "sizes": {"contexts": contexts, "batches": batches, "prefill": prefill,
                                        "warm_turn": [cached, added, out], "decoded_tokens": new}}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 2 layers, SmolLM2's shape for speed: a smoke "
                        "run, not numbers")
    parser.add_argument("--wheels", type=Path, default=WHEELS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    report: dict[str, Any] = {"versions": preflight(args.wheels)}
    import torch

    sys.path.insert(0, str(REPO))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    report["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (no CUDA: not a GPU check)"
    layers = 2 if args.quick else None
    report["checks"] = checks(random_model("smollm2-135m", torch.float32, device, layers), args.quick)
    report["all_passed"] = all(c["passed"] for c in report["checks"])
    shape = "smollm2-135m" if args.quick else "qwen2.5-coder-1.5b"
    report["speed"] = {"model_shape": shape, "layers": layers or SHAPES[shape]["num_hidden_layers"],
                       "dtype": "bfloat16", "weights": "random",
                       **speed(random_model(shape, torch.bfloat16, device, layers), args.quick)}
    report["wall_s"] = round(time.perf_counter() - started, 1)
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
