"""Prefix reuse: time to first token of plain transformers, a hand-copied cache, transformers continuous
batching with block sharing, and the agentcache engine cold and warm, on the same prompts in one run.

    python -m benchmarks.prefix_reuse                      # 1024, 2048, 4096-token prefixes, 3 repeats
    python -m benchmarks.prefix_reuse --quick              # 256 and 512 tokens, 1 repeat
    python -m benchmarks.prefix_reuse --sizes 256,512 --repeats 2 --json out.json
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from agentcache.cache_dir import models_dir
from benchmarks.report import write_json
from engine import Engine, EngineError, LoadedModel, Request, SamplingParams, load_model
from engine.model import output_cache, with_cache

METHODS = ("plain", "hand_cache", "transformers_cb", "cold", "warm")
LOCAL_METHODS = ("plain", "hand_cache", "cold", "warm")  # timed in one phase; transformers CB after them
ONE_TOKEN_CB = "transformers_cb_one_token_warmup"  # reported beside the five, not as one of them
CB_WARMUP_TOKENS = {"transformers_cb": 2, ONE_TOKEN_CB: 1}
RATIOS = {  # name -> (numerator, denominator); above 1 means the denominator is faster
    "plain/warm": ("plain", "warm"),
    "warm/hand_cache": ("warm", "hand_cache"),
    "cold/plain": ("cold", "plain"),
    "transformers_cb/warm": ("transformers_cb", "warm"),
}
DEFAULT_SIZES = (1024, 2048, 4096)
QUICK_SIZES = (256, 512)
SUFFIX_TOKENS = 64
PAGE_SIZE = 16
CAPACITY_MB = 2048
CB_TIMEOUT_S = 600.0
REPO = Path(__file__).resolve().parent.parent
CORPUS_GLOBS = ("examples/**/*.md", "examples/**/*.py", "agentcache/prompts/**/*.md", "agentcache/prompts/**/*.yaml", "layers/*.py")

NOTES = [
    "plain: one forward over prefix+suffix with use_cache=True and logits_to_keep=1 (the stronger baseline: "
    "no full-vocabulary logits over the prompt).",
    "hand_cache: the prefix is prefilled once into a DynamicCache outside the timed region; each timed request "
    "copy.deepcopy()s it (inside the timed region) and forwards the suffix with position_ids offset by the prefix "
    "(transformers 5.23's Llama forward takes no cache_position).",
    "transformers_cb: model.init_continuous_batching() with ContinuousBatchingConfig(allow_block_sharing=True, "
    f"page_size={PAGE_SIZE}); warmed with prefix+suffix-A at max_new_tokens=2 and eos disabled, because a request "
    "that finishes in its prefill step (max_new_tokens=1 or eos first) never registers its blocks for sharing; "
    "timed: add_request(prefix+suffix-B, max_new_tokens=1) until get_result() returns.",
    f"{ONE_TOKEN_CB}: the same configuration warmed with max_new_tokens=1, as the issue's measurement of about 4.6 s "
    "at 2,048 tokens evidently was: its blocks are never shared, so each request recomputes the prefix. Reported "
    "for reference beside the five methods, with its ratio to warm.",
    "transformers_cb runs its forwards on the manager's background thread; on a CPU where the main thread has "
    "run torch ops too, two OpenMP teams make that thread's forwards slower (see README, engine scheduler).",
    "transformers_cb is timed last, alone: its manager's background thread keeps running while it exists, so the "
    "other methods are timed before it is created. cold: a fresh Engine per repeat (all of them created, with "
    "the warm one, before the first timing of the size); warm: an Engine that has served prefix+suffix-A. Both "
    "are the wall clock "
    "around Engine.generate(max_tokens=1), which includes writing the new pages back; the engine's own "
    "timings.ttft_s is in engine_ttft_s.",
    "plain, hand_cache, cold and warm are timed in turn, the order rotated by one each repeat, so no method "
    "always runs right after the same other one.",
    "Every timed request of a repeat uses the same never-seen suffix-B, so first-token argmaxes are compared "
    "with plain's.",
]


@dataclass(slots=True)
class Prompts:
    prefix: list[int]
    warmup_suffix: list[int]
    timed_suffixes: list[list[int]]  # one per repeat


@dataclass(slots=True)
class Runs:
    seconds: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in (*METHODS, ONE_TOKEN_CB)})
    tokens: dict[str, list[int]] = field(default_factory=lambda: {m: [] for m in (*METHODS, ONE_TOKEN_CB)})
    engine_ttft: dict[str, list[float]] = field(default_factory=lambda: {"cold": [], "warm": []})
    cached_warm: list[int] = field(default_factory=list)
    cached_cb: dict[str, list[int]] = field(default_factory=lambda: {m: [] for m in CB_WARMUP_TOKENS})
    notes: dict[str, str] = field(default_factory=dict)

    def add(self, method: str, seconds: float, token: int) -> None:
        self.seconds[method].append(seconds)
        self.tokens[method].append(token)


class CBUnavailable(Exception):
    """transformers continuous batching could not serve a request; the message says why."""


def corpus_text() -> str:
    """Real text for prefixes: the repo's example project, prompts and layers sources, in a fixed order."""
    paths = sorted({p for pattern in CORPUS_GLOBS for p in REPO.glob(pattern) if p.is_file()})
    return "".join(f"# {p.relative_to(REPO).as_posix()}\n{p.read_text(encoding='utf-8')}\n" for p in paths)


def token_stream(lm: LoadedModel, length: int) -> list[int]:
    """`length` token ids: the tokenized corpus (repeated if short), or seeded random ids without a tokenizer."""
    if lm.tokenizer is None:
        special = {lm.config.bos_token_id, lm.config.eos_token_id, lm.config.pad_token_id}
        vocab = [t for t in range(lm.config.vocab_size) if t not in special]
        rng = random.Random(0)
        return [rng.choice(vocab) for _ in range(length)]
    ids = lm.tokenizer.encode(corpus_text(), add_special_tokens=False)
    return (ids * (length // len(ids) + 1))[:length]


def make_prompts(lm: LoadedModel, prefix_tokens: int, suffix_tokens: int, repeats: int) -> Prompts:
    """The prefix is the stream's first tokens; suffixes are the next windows, pairwise distinct."""
    stream = token_stream(lm, prefix_tokens + (repeats + 1) * suffix_tokens)
    windows = [stream[prefix_tokens + i * suffix_tokens : prefix_tokens + (i + 1) * suffix_tokens]
               for i in range(repeats + 1)]
    if len({tuple(w) for w in windows}) != len(windows):
        raise ValueError("the corpus repeats too soon to give distinct suffixes; lower --repeats or --suffix")
    return Prompts(stream[:prefix_tokens], windows[0], windows[1:])


def plain_ttft(model: Any, ids: list[int]) -> tuple[float, int]:
    start = time.perf_counter()
    out = model(input_ids=torch.tensor([ids]), use_cache=True, logits_to_keep=1)
    token = int(out.logits[0, -1].argmax())
    return time.perf_counter() - start, token


class HandCache:
    """The prefix prefilled once; each request deep-copies that cache and forwards only its suffix."""

    def __init__(self, model: Any, prefix: list[int]) -> None:
        self.model = model
        self.offset = len(prefix)
        self.cache = output_cache(model(input_ids=torch.tensor([prefix]), use_cache=True, logits_to_keep=1))

    def ttft(self, suffix: list[int]) -> tuple[float, int]:
        start = time.perf_counter()
        cache = copy.deepcopy(self.cache)
        positions = torch.arange(self.offset, self.offset + len(suffix)).unsqueeze(0)
        out = self.model(input_ids=torch.tensor([suffix]), **with_cache(self.model, cache), position_ids=positions,
                         use_cache=True, logits_to_keep=1)
        token = int(out.logits[0, -1].argmax())
        return time.perf_counter() - start, token


class TransformersCB:
    """transformers' ContinuousBatchingManager with block sharing, its background loop kept running for one size."""

    def __init__(self, model: Any, max_prompt: int, warmup_tokens: int) -> None:
        self.warmup_tokens = warmup_tokens
        pages_per_prompt = -(-(max_prompt + 2) // PAGE_SIZE)
        config = transformers.ContinuousBatchingConfig(
            page_size=PAGE_SIZE, num_blocks=4 * pages_per_prompt, max_batch_tokens=max_prompt,
            allow_block_sharing=True, seed=0,
        )
        eos = model.config.eos_token_id
        generation = transformers.GenerationConfig(do_sample=False, max_new_tokens=1, eos_token_id=eos,
                                                   pad_token_id=model.config.pad_token_id or 0)
        self.manager = model.init_continuous_batching(generation_config=generation,
                                                      continuous_batching_config=config)
        self.manager.start()
        self.matched: dict[str, int] = {}

    def warm(self, ids: list[int]) -> None:
        self._run(ids, max_new_tokens=self.warmup_tokens, eos_token_id=-1)
        self._record_prefix_matches()
        if not self.manager.batch_processor.cache.use_prefix_sharing:
            raise CBUnavailable("block sharing is not supported for this model")

    def ttft(self, ids: list[int]) -> tuple[float, int, int]:
        start = time.perf_counter()
        request_id, out = self._run(ids, max_new_tokens=1)
        elapsed = time.perf_counter() - start
        return elapsed, int(out.generated_tokens[0]), self.matched.get(request_id, 0)

    def close(self) -> None:
        if self.manager.is_running():
            self.manager.stop(block=True)
        self.manager.destroy()

    def _run(self, ids: list[int], **kwargs: Any) -> tuple[str, Any]:
        request_id = self.manager.add_request(ids, **kwargs)
        if request_id is None:
            raise CBUnavailable("the manager refused the request")
        deadline = time.perf_counter() + CB_TIMEOUT_S
        while (out := self.manager.get_result(request_id, timeout=1.0)) is None:
            if not self.manager.is_running() or time.perf_counter() > deadline:
                raise CBUnavailable(f"no result ({self.manager.background_thread_status.fatal_error or 'timeout'})")
        if out.error is not None or not out.generated_tokens:
            raise CBUnavailable(f"request failed: {out.error}")
        return request_id, out

    def _record_prefix_matches(self) -> None:
        """Count the tokens each request takes from shared blocks, to show that sharing happened."""
        cache = self.manager.batch_processor.cache
        search = cache.search_prefix_match

        def recorded(request_id: str, prompt_ids: list[int]) -> int:
            self.matched[request_id] = matched = search(request_id, prompt_ids)
            return matched

        cache.search_prefix_match = recorded


def engine_ttft(engine: Engine, ids: list[int]) -> tuple[float, int, Any]:
    request = Request(segments=[ids], max_tokens=1, sampling=SamplingParams())
    start = time.perf_counter()
    result = engine.generate(request)
    return time.perf_counter() - start, result.token_ids[0], result


def start_cb(model: Any, prompts: Prompts, runs: Runs, method: str) -> TransformersCB | None:
    cb = None
    try:
        cb = TransformersCB(model, len(prompts.prefix) + len(prompts.warmup_suffix), CB_WARMUP_TOKENS[method])
        cb.warm(prompts.prefix + prompts.warmup_suffix)
        return cb
    except Exception as exc:  # any failure of the baseline is recorded, never faked
        runs.notes[method] = one_line(exc)
        if cb is not None:
            cb.close()
        return None


def time_cb(lm: LoadedModel, prompts: Prompts, runs: Runs, method: str, progress: Progress, task: Any) -> None:
    """One manager for all repeats of a size, created after the other methods were timed and closed after."""
    cb = start_cb(lm.model, prompts, runs, method)
    try:
        for repeat, suffix in enumerate(prompts.timed_suffixes, 1):
            progress.update(task, description=f"prefix {len(prompts.prefix)}, repeat {repeat}/"
                                              f"{len(prompts.timed_suffixes)}: {method}")
            if cb is not None:
                try:
                    seconds, token, matched = cb.ttft(prompts.prefix + suffix)
                    runs.add(method, seconds, token)
                    runs.cached_cb[method].append(matched)
                except CBUnavailable as exc:
                    runs.notes[method] = one_line(exc)
                    runs.seconds[method].clear()
                    runs.tokens[method].clear()
                    cb.close()
                    cb = None
            progress.update(task, advance=1)
    finally:
        if cb is not None:
            cb.close()


def measure_size(lm: LoadedModel, prefix_tokens: int, suffix_tokens: int, repeats: int, capacity_bytes: int,
                 progress: Progress) -> dict[str, Any]:
    prompts = make_prompts(lm, prefix_tokens, suffix_tokens, repeats)
    task = progress.add_task(f"prefix {prefix_tokens}: set-up", total=repeats * (len(METHODS) + 1))
    runs = Runs()
    hand = HandCache(lm.model, prompts.prefix)
    warm_engine = Engine(lm, page_size=PAGE_SIZE, capacity_bytes=capacity_bytes)
    warm_engine.generate(Request(segments=[prompts.prefix + prompts.warmup_suffix], max_tokens=1))
    # every pool is allocated (zero-filled) before any timing and freed after: right after allocating or freeing
    # a pool of this size, the next forward ran up to 1.5x slower, whichever method it belonged to
    cold_engines = [Engine(lm, page_size=PAGE_SIZE, capacity_bytes=capacity_bytes) for _ in prompts.timed_suffixes]
    plain_ttft(lm.model, prompts.prefix + prompts.warmup_suffix)  # untimed: lets that settle
    for repeat, suffix in enumerate(prompts.timed_suffixes):
        ids = prompts.prefix + suffix
        for method in LOCAL_METHODS[repeat:] + LOCAL_METHODS[:repeat]:  # each repeat rotates the order
            progress.update(task, description=f"prefix {prefix_tokens}, repeat {repeat + 1}/{repeats}: {method}")
            if method == "plain":
                runs.add(method, *plain_ttft(lm.model, ids))
            elif method == "hand_cache":
                runs.add(method, *hand.ttft(suffix))
            else:
                engine = warm_engine if method == "warm" else cold_engines[repeat]
                seconds, token, result = engine_ttft(engine, ids)
                runs.add(method, seconds, token)
                runs.engine_ttft[method].append(result.timings.ttft_s)
                if method == "warm":
                    runs.cached_warm.append(result.usage.cached_tokens)
            progress.update(task, advance=1)
    del warm_engine, cold_engines
    # transformers CB last and alone: its manager's background thread would otherwise run beside the others
    for method in CB_WARMUP_TOKENS:
        time_cb(lm, prompts, runs, method, progress, task)
    progress.remove_task(task)
    return size_record(prefix_tokens, suffix_tokens, runs)


def size_record(prefix_tokens: int, suffix_tokens: int, runs: Runs) -> dict[str, Any]:
    ttft = {m: median(runs.seconds[m]) for m in METHODS}
    plain_tokens = runs.tokens["plain"]
    argmax_match = {m: (runs.tokens[m] == plain_tokens if runs.seconds[m] else None) for m in METHODS[1:]}
    if len(set(runs.cached_warm)) > 1:
        runs.notes["warm"] = f"cached tokens differed between repeats: {runs.cached_warm}"
    return {
        "prefix_tokens": prefix_tokens,
        "suffix_tokens": suffix_tokens,
        "ttft_s": ttft,
        "cached_tokens_warm": min(runs.cached_warm),
        "cached_tokens_transformers_cb": min(runs.cached_cb["transformers_cb"], default=None),
        "engine_ttft_s": {m: median(v) for m, v in runs.engine_ttft.items()},
        "ratios": {name: ratio(ttft[a], ttft[b]) for name, (a, b) in RATIOS.items()},
        "argmax_match": argmax_match,
        "notes": runs.notes,
        ONE_TOKEN_CB: one_token_cb_record(runs, ttft["warm"]),
    }


def one_token_cb_record(runs: Runs, warm: float | None) -> dict[str, Any]:
    seconds = median(runs.seconds[ONE_TOKEN_CB])
    tokens = runs.tokens[ONE_TOKEN_CB]
    return {"ttft_s": seconds, "cached_tokens": min(runs.cached_cb[ONE_TOKEN_CB], default=None),
            "ratio_to_warm": ratio(seconds, warm),
            "argmax_match": tokens == runs.tokens["plain"] if tokens else None}


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 6) if values else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 3)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def results_table(report: dict[str, Any]) -> Table:
    table = Table(title=f"Time to first token in seconds, {report['model']}, median of "
                        f"{report['settings']['repeats']}",
                  caption="a plain: one forward over prefix+suffix, use_cache=True, logits_to_keep=1 (the stronger "
                          "baseline) · b hand-copied DynamicCache · c transformers continuous batching with block "
                          "sharing · d agentcache cold · e agentcache warm · c1 as c, warmed with one token (its "
                          "blocks are never shared)")
    headers = ["prefix", "a plain", "b hand", "c cb", "d cold", "e warm", "cached e", "a/e", "e/b", "d/a", "c/e",
               "c1 cb", "c1/e"]
    for name in headers:
        table.add_column(name, justify="right")
    table.add_column("argmax vs a")
    for size in report["sizes"]:
        one_token = size[ONE_TOKEN_CB]
        seconds = [number(v, "{:.3f}") for v in size["ttft_s"].values()]
        ratios = [number(v, "{:.2f}x") for v in size["ratios"].values()]
        extra = [number(one_token["ttft_s"], "{:.3f}"), number(one_token["ratio_to_warm"], "{:.2f}x")]
        checks = {**size["argmax_match"], ONE_TOKEN_CB: one_token["argmax_match"]}
        mismatched = [m for m, ok in checks.items() if ok is False]
        argmax = "ok" if not mismatched else "[red]WARNING: " + ", ".join(mismatched) + " differ[/red]"
        table.add_row(str(size["prefix_tokens"]), *seconds, str(size["cached_tokens_warm"]), *ratios, *extra,
                      argmax)
    return table


def number(value: float | None, pattern: str) -> str:
    return pattern.format(value) if value is not None else "n/a"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.prefix_reuse",
        description="Time to first token with a shared prefix: plain transformers, a hand-copied cache, "
                    "transformers continuous batching, and the agentcache engine cold and warm.")
    parser.add_argument("--model", default=None, help="embedded (default), random-tiny, a local HF dir or hub id")
    parser.add_argument("--sizes", type=sizes_arg, default=None,
                        help=f"comma-separated prefix lengths in tokens (default {','.join(map(str, DEFAULT_SIZES))})")
    parser.add_argument("--suffix", type=int, default=SUFFIX_TOKENS, help="suffix tokens per request (default 64)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per size; medians (default 3)")
    parser.add_argument("--quick", action="store_true",
                        help=f"sizes {','.join(map(str, QUICK_SIZES))} and 1 repeat unless given")
    parser.add_argument("--capacity-mb", type=int, default=CAPACITY_MB,
                        help=f"KV pool of each agentcache engine in MiB (default {CAPACITY_MB})")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON to this path")
    args = parser.parse_args(argv)
    args.sizes = args.sizes or (list(QUICK_SIZES) if args.quick else list(DEFAULT_SIZES))
    args.repeats = args.repeats or (1 if args.quick else 3)
    if min(args.repeats, args.suffix, args.capacity_mb) < 1:
        parser.error("--repeats, --suffix and --capacity-mb must be at least 1")
    return args


def sizes_arg(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("sizes must be positive integers")
    return sizes


def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    lm = load_model(args.model, cache_dir=models_dir())
    too_long = [p for p in args.sizes if p + args.suffix + 1 > lm.max_len]
    if too_long:
        raise EngineError(f"prefix sizes {too_long} + {args.suffix} suffix tokens exceed the window of {lm.max_len}")
    sizes, capacity_bytes, load_before = [], args.capacity_mb << 20, os.getloadavg()[0]
    with torch.inference_mode(), Progress(console=console, transient=True) as progress:
        plain_ttft(lm.model, token_stream(lm, 32))  # first-call initialisation stays out of every timing
        for prefix_tokens in args.sizes:
            sizes.append(measure_size(lm, prefix_tokens, args.suffix, args.repeats, capacity_bytes, progress))
    settings = {"repeats": args.repeats, "page_size": PAGE_SIZE, "capacity_bytes": capacity_bytes,
                "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                "transformers": transformers.__version__, "device": str(lm.device), "dtype": str(lm.dtype),
                "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)]}  # other processes' noise
    return {"model": lm.name, "sizes": sizes, "settings": settings, "notes": NOTES}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console, errors = Console(), Console(stderr=True)
    if not console.is_terminal:
        console = Console(width=140)
    try:
        report = run(args, errors)
    except (EngineError, ValueError) as exc:
        errors.print(f"[red]error:[/red] {exc}")
        return 1
    console.print(results_table(report))
    for size in report["sizes"]:
        for method, reason in size["notes"].items():
            console.print(f"prefix {size['prefix_tokens']}: {method}: {reason}")
    write_json(args.json, report, console)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
