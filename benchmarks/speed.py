"""Engine speed: prefill, time per output token and a warm agent turn, for plain transformers, agentcache with each
quantization, and llama.cpp on the same GGUF when llama-cpp-python is installed; and each quantization's greedy
agreement with the unquantized model. llama.cpp runs twice: on the shipped GGUF, and on that GGUF requantized once to
Q8_0 (8.5 bits a weight), the same width as agentcache's int8 weights.

Each measurement runs in its own process, one after another (never two at once):
  prefill_tok_s      a cold prompt of 512 and of 2,048 tokens, to the first token
  tpot_ms_1k         mean time per output token of a 32-token greedy reply after 1,024 tokens of context, the
                     median of three replies (one is within +-10% on a shared 2-core machine)
  warm_turn_s        2,000 tokens already cached, then 200 new ones and a 50-token reply (end-of-text masked), the
                     median of three turns, each on a fresh cache
  greedy_agreement   50 prompts (chat turns on examples/repo's files), 16 greedy tokens each: the share of tokens
                     the quantized model produces before its first disagreement with the unquantized one; where
                     the dtype is not float32, float32_agreement is the same measure for float32 weights against
                     the unquantized run (how much the dtype alone moves greedy output)

    python -m benchmarks.speed                                   # the default model and SmolLM2
    python -m benchmarks.speed --models smollm2-135m --quants none,int8 --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from agentcache.cache_dir import models_dir
from agentcache.config import DEFAULT_MODEL
from benchmarks.prefix_reuse import token_stream
from benchmarks.report import write_json
from engine import Engine, Request, load_model, registry
from engine.hardware import BF16_CPU_FLAGS, choose_dtype, cpu_flags
from engine.model import LoadedModel
from engine.quant import QUANT_CHOICES

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "repo"
PREFILLS = (512, 2048)
CONTEXT, REPLY = 1024, 32
CACHED, NEW, WARM_REPLY = 2000, 200, 50
PROMPTS, AGREE_TOKENS = 50, 16
TPOT_RUNS = WARM_RUNS = 3
QUICK = {"PREFILLS": (64, 256), "CONTEXT": 128, "REPLY": 4, "CACHED": 200, "NEW": 40, "WARM_REPLY": 5, "PROMPTS": 6,
         "AGREE_TOKENS": 4}  # --quick: sizes for a smoke run (the test's), not for numbers
child_flags: list[str] = []  # flags every measuring process gets (--quick)
FLAGS_SHOWN = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni", "avx_vnni")


def no_eos(lm: LoadedModel) -> Any:
    """A logits mask that forbids end-of-text, so a reply has exactly the tokens asked for."""
    allowed = torch.ones(lm.config.vocab_size, dtype=torch.bool)
    allowed[sorted(lm.eos_token_ids)] = False
    return lambda ids: allowed


def engine_row(lm: LoadedModel) -> dict[str, Any]:
    """agentcache: each measurement on a fresh engine, so nothing is cached that the row does not say."""
    stream, mask = token_stream(lm, CACHED + NEW + 2048), no_eos(lm)
    Engine(lm, capacity_bytes=256 << 20).generate(Request([stream[:32]], max_tokens=2))  # warm torch up
    prefill = {}
    for n in PREFILLS:
        result = Engine(lm, capacity_bytes=512 << 20).generate(Request([stream[:n]], max_tokens=1))
        prefill[str(n)] = n / result.timings.ttft_s
    tpot = statistics.median(Engine(lm, capacity_bytes=512 << 20).generate(
        Request([stream[:CONTEXT]], max_tokens=REPLY + 1, logits_mask=mask)).timings.tpot_s for _ in range(TPOT_RUNS))

    def warm_turn() -> float:
        engine = Engine(lm, capacity_bytes=512 << 20)
        engine.generate(Request([stream[:CACHED]], max_tokens=1))
        start = time.perf_counter()
        turn = engine.generate(Request([stream[:CACHED], stream[CACHED:CACHED + NEW]], max_tokens=WARM_REPLY,
                                       logits_mask=mask))
        warm = time.perf_counter() - start
        assert turn.usage.cached_tokens >= CACHED - 16 and turn.usage.completion_tokens == WARM_REPLY
        return warm

    warm = statistics.median(warm_turn() for _ in range(WARM_RUNS))
    return {"prefill_tok_s": prefill, "tpot_ms_1k": tpot * 1000, "warm_turn_s": warm}


def agent_row(lm: LoadedModel) -> dict[str, Any]:
    """The agent's own path against the bare engine, alternated on one engine: a reply through LocalBackend with
    RunConfig's defaults (the reply grammar's mask, speculate auto) to a question about examples/repo (L1 of the ask
    role, L2 of the repo, the question as L3), then the bare engine on the same prompt for as many tokens (the
    end-of-text-free mask engine_row decodes with, no speculation). Time per output token of each, medians."""
    from agentcache import PROMPTS_DIR
    from agentcache.backends import GenSettings
    from agentcache.backends.local import LocalBackend
    from agentcache.config import RunConfig
    from agentcache.wiring import load_registry
    from layers import Block, Context, Layer
    from layers.l1 import build_l1
    from layers.l2 import build_l2

    config, tools = RunConfig(), list(load_registry())
    engine = Engine(lm, capacity_bytes=512 << 20)
    backend = LocalBackend(lm, engine, config.tool_format, config.tool_choice, config.speculate)
    question = Block(Layer.L3, "user", "user", b"Explain what textstats/words.py does, function by function.")
    context = Context([*build_l1("ask", PROMPTS_DIR, load_registry()), *build_l2(EXAMPLE), question])
    enabled = {"read_file", "search", "list_files"}
    settings = GenSettings(max_tokens=REPLY + 1, temperature=config.temperature)
    segments, mask = backend.renderer.block_segments(context), no_eos(lm)
    backend.complete(context, tools, enabled, settings)  # the prefix cached: both paths decode on warm pages
    agent, bare, drafted, accepted = [], [], 0, 0
    for _ in range(TPOT_RUNS):
        reply = backend.complete(context, tools, enabled, settings)
        agent.append(reply.timings["tpot_s"])
        drafted, accepted = drafted + reply.usage["drafted_tokens"], accepted + reply.usage["accepted_tokens"]
        tokens = max(reply.usage["completion_tokens"], 2)
        bare.append(engine.generate(Request(segments, max_tokens=tokens, logits_mask=mask)).timings.tpot_s)
    agent_ms, bare_ms = statistics.median(agent) * 1000, statistics.median(bare) * 1000
    return {"tpot_ms_1k": agent_ms, "bare_tpot_ms": bare_ms, "agent_over_bare": agent_ms / bare_ms,
            "prompt_tokens": reply.usage["prompt_tokens"], "reply_tokens": reply.usage["completion_tokens"],
            "drafted_tokens": drafted, "accepted_tokens": accepted, "speculate": config.speculate}


def transformers_row(lm: LoadedModel) -> dict[str, Any]:
    """Plain transformers on the same weights: one forward per prefill, its own cache for decode and the warm turn."""
    from transformers import DynamicCache

    model, stream = lm.model, token_stream(lm, CACHED + NEW + 2048)
    eos = sorted(lm.eos_token_ids)

    def forward(ids: list[int], cache: Any) -> torch.Tensor:
        out = model(input_ids=torch.tensor([ids], device=lm.device), past_key_values=cache, use_cache=True,
                    logits_to_keep=1)
        logits = out.logits[0, -1].float()
        logits[eos] = float("-inf")
        return logits

    def reply(cache: Any, logits: torch.Tensor, tokens: int) -> None:
        for _ in range(tokens - 1):
            logits = forward([int(logits.argmax())], cache)

    with torch.inference_mode():
        forward(stream[:32], DynamicCache(config=model.config))
        prefill = {}
        for n in PREFILLS:
            start = time.perf_counter()
            forward(stream[:n], DynamicCache(config=model.config))
            prefill[str(n)] = n / (time.perf_counter() - start)
        tpots = []
        for _ in range(TPOT_RUNS):
            cache = DynamicCache(config=model.config)
            logits = forward(stream[:CONTEXT], cache)
            start = time.perf_counter()
            reply(cache, logits, REPLY + 1)
            tpots.append((time.perf_counter() - start) / REPLY)
        tpot = statistics.median(tpots)
        warms = []
        for _ in range(WARM_RUNS):
            cache = DynamicCache(config=model.config)
            forward(stream[:CACHED], cache)
            start = time.perf_counter()
            reply(cache, forward(stream[CACHED:CACHED + NEW], cache), WARM_REPLY)
            warms.append(time.perf_counter() - start)
        warm = statistics.median(warms)
    return {"prefill_tok_s": prefill, "tpot_ms_1k": tpot * 1000, "warm_turn_s": warm}


def requantized_q8(gguf: Path) -> Path:
    """`gguf` requantized to Q8_0 by llama.cpp, once, kept in the models folder with its sha256 (checked before each
    use)."""
    import ctypes

    import llama_cpp

    target = models_dir() / "gguf" / (gguf.stem + ".q8_0.gguf")
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = target.with_suffix(".sha256")
    if target.is_file() and digest.is_file() and registry.sha256_of(target) == digest.read_text().strip():
        return target
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.allow_requantize, params.nthread = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0, True, 0
    tmp = target.with_name(target.name + ".tmp")
    if llama_cpp.llama_model_quantize(str(gguf).encode(), str(tmp).encode(), ctypes.byref(params)) != 0:
        raise RuntimeError(f"llama.cpp could not requantize {gguf.name} to Q8_0")
    digest.write_text(registry.sha256_of(tmp) + "\n")
    tmp.replace(target)
    return target


def llama_installed() -> bool:
    """Whether llama-cpp-python, the llama.cpp peer, is installed here (`make peers`)."""
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


LLAMA_DEFAULT = "fa0-ub512-mmap1"  # the binding's defaults but for the threads: flash attention off, mmap'ed weights


def llama_configs() -> list[str]:
    """Every llama.cpp configuration the peer is tuned over (benchmarks.peer_tune): flash attention off and on,
    micro-batches of 512 and 2,048 tokens, the weights mmap'ed from the file or read into anonymous memory (which
    transparent huge pages can back)."""
    return [f"fa{fa}-ub{ub}-mmap{mmap}" for fa in (0, 1) for ub in (512, 2048) for mmap in (1, 0)]


def llama_settings(config: str) -> dict[str, Any]:
    """llama_cpp.Llama's keyword arguments for a configuration name of llama_configs(); threads for both decode and
    batches are this process's torch threads (the cores agentcache uses)."""
    found = re.fullmatch(r"fa([01])-ub(\d+)-mmap([01])", config)
    if found is None:
        raise ValueError(f"unknown llama.cpp configuration {config!r} (e.g. {LLAMA_DEFAULT})")
    fa, ubatch, mmap = int(found.group(1)), int(found.group(2)), int(found.group(3))
    threads = torch.get_num_threads()
    return {"n_threads": threads, "n_threads_batch": threads, "flash_attn": bool(fa), "n_ubatch": ubatch,
            "n_batch": max(512, ubatch), "use_mmap": bool(mmap)}


def llama_build() -> dict[str, str]:
    """What llama.cpp build ran: the binding's version, llama.cpp's system info line (its CPU features) and which
    build `make peers` kept (benchmarks.llama_build: native, or no-amx where the native one crashed)."""
    import llama_cpp

    from benchmarks.llama_build import BUILD_FILE

    build = json.loads(BUILD_FILE.read_text())["build"] if BUILD_FILE.is_file() else "unchecked (not make peers)"
    return {"version": llama_cpp.__version__, "system_info": llama_cpp.llama_print_system_info().decode().strip(),
            "build": build}


class LlamaPeer:
    """llama.cpp on a GGUF through llama-cpp-python, in a configuration of llama_configs(), fed benchmarks.speed's
    token stream; greedy replies take the last evaluated token's argmax with end-of-text masked, as the engine's
    rows do."""

    def __init__(self, lm: LoadedModel, gguf: Path, config: str = LLAMA_DEFAULT) -> None:
        import llama_cpp

        self.llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=4096, verbose=False, **llama_settings(config))
        self.stream = token_stream(lm, CACHED + NEW + 2048)
        self.eos = sorted(lm.eos_token_ids)
        self.llm.eval(self.stream[:32])  # warm-up

    def greedy(self, tokens: int) -> None:
        import llama_cpp
        import numpy as np

        llm = self.llm
        for _ in range(tokens):
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits(llm.ctx), shape=(llm.n_vocab(),)).copy()
            logits[self.eos] = -np.inf
            llm.eval([int(logits.argmax())])

    def tpot_ms(self) -> float:
        """Median time per token of a REPLY-token greedy reply after CONTEXT tokens, over TPOT_RUNS replies."""
        tpots = []
        for _ in range(TPOT_RUNS):
            self.llm.reset()
            self.llm.eval(self.stream[:CONTEXT])
            start = time.perf_counter()
            self.greedy(REPLY)
            tpots.append((time.perf_counter() - start) / REPLY)
        return statistics.median(tpots) * 1000


def llama_cpp_row(lm: LoadedModel, gguf: Path, q8: bool = False, config: str = LLAMA_DEFAULT) -> dict[str, Any] | None:
    """llama.cpp on the model's own GGUF (or its Q8_0 requantization), through llama-cpp-python, in `config`
    (llama_configs()); its KV cache keeps the prefix for the warm turn."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return None
    peer = LlamaPeer(lm, requantized_q8(gguf) if q8 else gguf, config)
    llm, stream, greedy = peer.llm, peer.stream, peer.greedy
    prefill = {}
    for n in PREFILLS:
        llm.reset()
        start = time.perf_counter()
        llm.eval(stream[:n])
        prefill[str(n)] = n / (time.perf_counter() - start)
    tpot = peer.tpot_ms() / 1000
    warms = []
    for _ in range(WARM_RUNS):
        llm.reset()
        llm.eval(stream[:CACHED])
        start = time.perf_counter()
        llm.eval(stream[CACHED:CACHED + NEW])
        greedy(WARM_REPLY - 1)
        warms.append(time.perf_counter() - start)
    warm = statistics.median(warms)
    return {"prefill_tok_s": prefill, "tpot_ms_1k": tpot * 1000, "warm_turn_s": warm, "config": config,
            **llama_build()}


def agreement_prompts(lm: LoadedModel) -> list[str]:
    """PROMPTS chat turns: a question about each of 50 windows of examples/repo's Python files."""
    lines = [line for path in sorted(EXAMPLE.rglob("*.py")) for line in path.read_text().splitlines()]
    step = max(1, (len(lines) - 12) // PROMPTS)
    prompts = []
    for i in range(PROMPTS):
        window = "\n".join(lines[i * step: i * step + 12])
        messages = [{"role": "user", "content": f"What does this code do?\n```python\n{window}\n```"}]
        prompts.append(lm.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    return prompts


def greedy_tokens(lm: LoadedModel, prompts: list[str]) -> list[list[int]]:
    engine, mask = Engine(lm, capacity_bytes=512 << 20), no_eos(lm)
    return [engine.generate(Request([p], max_tokens=AGREE_TOKENS, logits_mask=mask)).token_ids for p in prompts]


def agreement(reference: list[list[int]], other: list[list[int]]) -> float:
    """Mean share of each reply produced before the first token that differs from the reference's."""
    shares = []
    for a, b in zip(reference, other):
        same = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        shares.append(same / len(a))
    return sum(shares) / len(shares)


def child(spec: str) -> dict[str, Any]:
    """One measurement in this process: `spec` is MODEL,METHOD,QUANT,DTYPE (METHOD "greedy": agreement tokens only;
    "agentcache-speed": the agentcache row without them; "scheme": what QUANT resolves to for the model here;
    "llama.cpp@CONFIG": llama.cpp in a configuration of llama_configs())."""
    name, method, quant, dtype = spec.split(",")
    lm = load_model(name, dtype=dtype, cache_dir=models_dir(), quant=quant)
    if method == "scheme":
        return {"scheme": lm.quant, "reason": lm.quant_reason}
    if method == "transformers":
        return {"row": transformers_row(lm)}
    if method == "agentcache-speed":
        return {"row": engine_row(lm)}
    if method == "agent":
        return {"row": agent_row(lm)}
    if method.startswith("llama.cpp"):  # llama.cpp, llama.cpp-q8_0, each with @CONFIG or not (LLAMA_DEFAULT)
        method, _, config = method.partition("@")
        entry = registry.find(name)
        gguf = registry.gguf_path(entry, models_dir()) if entry is not None else None
        return {"row": llama_cpp_row(lm, gguf, method.endswith("q8_0"), config or LLAMA_DEFAULT)
                if gguf is not None else None}
    tokens = greedy_tokens(lm, agreement_prompts(lm))
    return {"row": engine_row(lm) if method == "agentcache" else None, "tokens": tokens}


def in_process(spec: str, checkout: Path = REPO) -> dict[str, Any]:
    """`child(spec)` in a fresh Python process, so no measurement shares memory or caches with another; its code is
    `checkout`'s (this one by default; benchmarks.speed_pairs --baseline gives an earlier one)."""
    command = [sys.executable, "-m", "benchmarks.speed", *child_flags, "--child", spec]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=checkout)
    if proc.returncode != 0:
        raise RuntimeError(f"{spec}: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'failed'}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_model(name: str, quants: list[str], console: Console) -> dict[str, Any]:
    dtype = choose_dtype("auto").name
    console.print(f"{name}: transformers ...")
    rows = [{"method": "transformers", "dtype": dtype, "quant": "none",
             **in_process(f"{name},transformers,none,{dtype}")["row"]}]
    reference, skipped = None, {}
    for quant in quants:
        if quant == "int4" and dtype != "bfloat16":
            console.print(f"{name}: int4 skipped (it needs bfloat16; dtype auto is {dtype} here)")
            continue
        console.print(f"{name}: agentcache {dtype} {quant} ...")
        try:
            got = in_process(f"{name},agentcache,{quant},{dtype}")
        except RuntimeError as exc:  # a scheme the model cannot run (gguf on a file of other blocks): said, skipped
            console.print(f"{name}: {quant} skipped: {exc}")
            skipped[quant] = str(exc)
            continue
        reference = reference if reference is not None or quant != "none" else got["tokens"]
        row = {"method": "agentcache", "dtype": dtype, "quant": quant, **got["row"]}
        if reference is not None:
            row["greedy_agreement"] = agreement(reference, got["tokens"])
        rows.append(row)
    result: dict[str, Any] = {"name": name, "rows": rows,
                              "default_quant": in_process(f"{name},scheme,auto,{dtype}")["scheme"]}
    console.print(f"{name}: the agent's path against the bare engine ...")
    result["agent_path"] = in_process(f"{name},agent,auto,{dtype}")["row"]
    if skipped:
        result["skipped"] = skipped
    if dtype != "float32" and reference is not None:  # how far the dtype alone moves greedy output: the noise floor
        console.print(f"{name}: float32 agreement ...")
        result["float32_agreement"] = agreement(reference, in_process(f"{name},greedy,none,float32")["tokens"])
    if registry.find(name) is not None:
        console.print(f"{name}: llama.cpp ...")
        row = in_process(f"{name},llama.cpp,none,{dtype}")["row"]
        if row is None:
            console.print("llama.cpp: llama-cpp-python is not installed (make peers), no llama.cpp row")
        else:
            found = re.search(r"(q\d\w*)\.gguf$", registry.find(name).file, re.IGNORECASE)
            quant = found.group(1).upper() if found else "gguf"
            rows.append({"method": "llama.cpp", "dtype": "gguf", "quant": quant, **row})
            console.print(f"{name}: llama.cpp Q8_0 ...")
            row = in_process(f"{name},llama.cpp-q8_0,none,{dtype}")["row"]
            rows.append({"method": "llama.cpp", "dtype": "gguf", "quant": "Q8_0", **row})
    return result


def ratios(model: dict[str, Any]) -> dict[str, Any]:
    """The default scheme's agentcache row (what `--quant auto` picks here; the fastest warm turn if it was not
    measured) against transformers and llama.cpp (keyed "llama.cpp" for the shipped GGUF, "llama.cpp Q8_0" for its
    Q8_0 copy): <1 is faster for times, >1 for throughput."""
    peers = [r for r in model["rows"] if r["method"] != "agentcache"]
    rows = {r["method"] + (" Q8_0" if r["quant"] == "Q8_0" else ""): r for r in peers}
    ours = [r for r in model["rows"] if r["method"] == "agentcache"]
    best = next((r for r in ours if r["quant"] == model.get("default_quant")), None) or \
        min(ours, key=lambda r: r["warm_turn_s"])
    out: dict[str, Any] = {"agentcache": f"{best['dtype']} {best['quant']}"}
    long = str(max(PREFILLS))
    for method, row in rows.items():
        out[method] = {"tpot": best["tpot_ms_1k"] / row["tpot_ms_1k"],
                       "prefill_long": best["prefill_tok_s"][long] / row["prefill_tok_s"][long],
                       "warm_turn": best["warm_turn_s"] / row["warm_turn_s"]}
    return out


def machine() -> dict[str, Any]:
    """What the benchmarks' reports say of the machine they ran on."""
    flags = cpu_flags()
    return {"cpu_flags": sorted(flags & set(FLAGS_SHOWN)), "cuda": torch.cuda.is_available(),
            "threads": torch.get_num_threads(), "processor": platform.processor() or platform.machine(),
            "bf16_native": bool(flags & set(BF16_CPU_FLAGS))}


def use_quick_sizes() -> None:
    """--quick, for this module and every measuring process it starts: smoke sizes, not numbers."""
    globals().update(QUICK)
    child_flags[:] = ["--quick"]


def report_model(console: Console, table: Table, model: dict[str, Any], path: Path | None) -> dict[str, Any]:
    """Print one model's `table` and write its report, with the machine's, where --json asked."""
    console.print(table)
    report = {"machine": machine(), "models": [model]}
    write_json(path, report, console)
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=f"{DEFAULT_MODEL},smollm2-135m")
    parser.add_argument("--quants", default=",".join(q for q in QUANT_CHOICES if q != "auto"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run, not numbers")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        use_quick_sizes()
    if args.child:
        print(json.dumps(child(args.child)))
        return {}
    console = Console(highlight=False)
    report: dict[str, Any] = {
        "machine": machine(),
        "models": [measure_model(name, args.quants.split(","), console) for name in args.models.split(",")],
    }
    for model in report["models"]:
        model["ratios"] = ratios(model)
        short, long = (str(n) for n in PREFILLS)
        table = Table("method", "dtype", "quant", f"prefill {short} tok/s", f"prefill {long} tok/s", "ms/token @1k",
                      "warm turn s", "greedy agreement", title=model["name"])
        for r in model["rows"]:
            agree = r.get("greedy_agreement")
            table.add_row(r["method"], r["dtype"], r["quant"], f"{r['prefill_tok_s'][short]:.0f}",
                          f"{r['prefill_tok_s'][long]:.0f}", f"{r['tpot_ms_1k']:.1f}", f"{r['warm_turn_s']:.2f}",
                          "" if agree is None else f"{agree:.3f}")
        console.print(table)
        agent = model["agent_path"]
        console.print(f"agent path (LocalBackend, reply grammar, speculate {agent['speculate']}): "
                      f"{agent['tpot_ms_1k']:.1f} ms/token against the bare engine's {agent['bare_tpot_ms']:.1f} on "
                      f"the same {agent['prompt_tokens']}-token prompt: {agent['agent_over_bare']:.2f}x")
        if "float32_agreement" in model:
            console.print(f"float32 unquantized vs {model['rows'][0]['dtype']}: greedy agreement "
                          f"{model['float32_agreement']:.3f}")
        for method, ratio in model["ratios"].items():
            if method != "agentcache":
                console.print(f"agentcache ({model['ratios']['agentcache']}) / {method}: time per token "
                              f"{ratio['tpot']:.2f}x, prefill {long} {ratio['prefill_long']:.2f}x, "
                              f"warm turn {ratio['warm_turn']:.2f}x")
    write_json(args.json, report, console)
    return report


if __name__ == "__main__":
    main()
