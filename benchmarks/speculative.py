"""Speculative decoding on real agent replies (engine.speculate): tokens per second without it, with prompt lookup,
with `auto` (the default), with the draft model (the registry's pair: the 0.5B for the 1.5B) and with `auto` on an
engine that has the draft model, on the suite's own requests.

Two steps. `--collect FILE` runs suite tasks (questions and edits, benchmarks.tasks) by agentcache's loop on the
default model, speculation off, and writes every request the agent sent as the engine got it: its segments (L1+L2
as the system turn, each L3 block, the generation prompt), the grammar it was masked by (the enabled tools, whether
a tool call was required), its token limit, and the reply. `--replay FILE` sends each request again on one engine,
once per method, the methods' order rotated from request to request; the prefix is cached before the first, so each
reply's time is its decode (the methods with the draft model run on a second engine over the same target model,
its prefix cached in both pools). Each method's reply must be plain decoding's token for token (greedy);
`identical` says whether it was.

    python -m benchmarks.speculative --collect benchmarks/results/speculative-requests.json
    python -m benchmarks.speculative --replay benchmarks/results/speculative-requests.json --json out.json

Rows per method and reply kind (edit: an edit_file / write_file call or code written as a block; tool call:
another tool; answer): tokens per second after each reply's first token (the decode rate; the first token comes
from prefill), drafted tokens accepted, and whether every reply was the plain one. JSON:
`{"machine": {...}, "rows": [{"method", "kind", "tok_s", "acceptance", "identical", ...}]}`.

llama.cpp, plain and with its own prompt-lookup decoding (llama-cpp-python's LlamaPromptLookupDecoding, 2 and 10
predicted tokens), runs on the same prompts after ours where llama-cpp-python is installed (`make peers`; `--peer
only` runs only its rows); a row says so where it is not. Its replies are greedy but unconstrained (llama.cpp has no
llguidance grammar of ours), so they are its own, and its speedup is over its own plain decoding.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from agentcache.config import RunConfig, check_config
from benchmarks.speed import llama_installed, machine

TASKS = ("where-split-sentences", "rank-helper", "ct-ttl-default", "tomli-invalid-error", "fix-syllables-case",
         "add-longest-word", "ct-fix-lru-read", "tomli-fix-cr-escape")
METHODS = ("off", "lookup", "auto", "draft", "auto+draft")  # auto+draft: auto on an engine with the draft model
EDIT_TOOLS = ("edit_file", "write_file")
CALL_NAME = re.compile(r'"name"\s*:\s*"(\w+)"')


def kind_of(reply: str) -> str:
    """edit, tool call or answer, by what the reply is: a call's tool name, or code written as a fenced block (the
    edit the agent takes from prose: agentcache.tools.code_blocks)."""
    name = CALL_NAME.search(reply)
    if name is not None:
        return "edit" if name.group(1) in EDIT_TOOLS else "tool call"
    return "edit" if "```" in reply else "answer"


class Recorder:
    """A LocalBackend whose every completion is kept as the engine request it sent (what --replay sends again)."""

    def __init__(self, backend: Any) -> None:
        self.backend, self.requests, self.texts = backend, [], {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)

    def complete(self, context: Any, tools: list[Any], enabled: set[str], settings: Any) -> Any:
        from agentcache.backends.local import RETENTION_OF

        reply = self.backend.complete(context, tools, enabled, settings)
        segments = self.backend.renderer.block_segments(context)
        keys = []
        for text in segments:
            key = hashlib.sha256(text.encode()).hexdigest()[:16]
            self.texts[key] = text
            keys.append(key)
        retention = [RETENTION_OF[block.layer] for block in context]
        self.requests.append({"segments": keys, "retention": retention + ["turn"] * (len(segments) - len(retention)),
                              "tools": sorted(enabled), "tool_required": settings.tool_required,
                              "max_tokens": settings.max_tokens, "reply": reply.text,
                              "completion_tokens": reply.usage["completion_tokens"], "kind": kind_of(reply.text)})
        return reply


def collect(path: Path, task_ids: list[str], console: Console, name: str | None = None,
            dtype: str = "auto") -> dict[str, Any]:
    """Run the tasks by the agent on model `name` (the default: None), speculation off, and write every request it
    sent to `path` (rewritten after each task)."""
    from agentcache.backends.local import LocalBackend
    from agentcache.wiring import load_registry, local_engine
    from benchmarks.tasks import run_one, select

    name = name or RunConfig().model
    model, engine = local_engine(check_config(RunConfig(model=name, disk_cache=False, dtype=dtype)))
    recorder = Recorder(LocalBackend(model, engine, tool_choice=RunConfig().tool_choice, speculate="off"))
    registry, tasks = load_registry(), select(",".join(task_ids), None)
    with tempfile.TemporaryDirectory(prefix="agentcache-speculative-") as tmp:
        for task in tasks:
            before = len(recorder.requests)
            record = run_one(task, recorder, registry, name, Path(tmp), RunConfig().tool_choice)
            for request in recorder.requests[before:]:
                request["task"] = task.id
            console.print(f"{task.id}: {len(recorder.requests) - before} requests, passed {record['passed']}")
            done = [t.id for t in tasks[: tasks.index(task) + 1]]
            data = {"model": name, "dtype": dtype, "quant": model.quant, "tasks": done, "texts": recorder.texts,
                    "requests": recorder.requests}
            path.write_text(json.dumps(data, indent=1) + "\n")  # after each task: a cut-off run keeps what it did
    return data


def replay(data: dict[str, Any], methods: tuple[str, ...], console: Console,
           draft: str | None = None) -> list[dict[str, Any]]:
    """Every recorded request once per method on one engine, the methods' order rotated per request. One result
    per (request, method): its tokens, decode seconds after the first token, drafted and accepted tokens. `draft`: the
    draft model of the methods that have one (default: the registry's pair for the recorded model)."""
    from agentcache.backends.local import LocalBackend, tensor_mask
    from agentcache.cache_dir import models_dir
    from agentcache.wiring import draft_model_name, load_registry, local_engine
    from engine import Engine, Request, load_model

    config = check_config(RunConfig(model=data["model"], disk_cache=False, dtype=data.get("dtype", "auto")))
    model, engine = local_engine(config)
    engines = {"plain": engine}
    if any("draft" in method for method in methods):  # the same target on a second engine, with its draft model
        drafter = load_model(draft or draft_model_name(replace(config, speculate="draft")), dtype=config.dtype,
                             cache_dir=models_dir(), quant=config.quant)
        engines["draft"] = Engine(model, capacity_bytes=config.kv_capacity_mb << 20, draft=drafter)
    backend, registry = LocalBackend(model, engine, tool_choice=RunConfig().tool_choice), load_registry()
    tools = list(registry)
    results = []
    for index, recorded in enumerate(data["requests"]):
        segments = [data["texts"][key] for key in recorded["segments"]]
        grammar = backend.grammar(tools, set(recorded["tools"]), recorded["tool_required"])

        def send(method: str, max_tokens: int, on: Engine | None = None) -> Any:
            mask = tensor_mask(grammar.new_mask(model.config.vocab_size))
            on = on or engines["draft" if "draft" in method else "plain"]
            return on.generate(Request(segments, max_tokens=max_tokens, logits_mask=mask, forced_tokens=mask.forced,
                                       retention=recorded["retention"], speculate=method.removesuffix("+draft")))

        send("off", 1)  # the prefix cached: every method's reply starts from the same warm pages, in the draft
        if "draft" in engines:  # model's pool too (one drafted token makes it prefill the prompt)
            send("draft", 3)
        order = methods[index % len(methods):] + methods[: index % len(methods)]
        for method in order:
            result = send(method, recorded["max_tokens"])
            decode_s = result.timings.total_s - result.timings.ttft_s
            results.append({"request": index, "task": recorded.get("task"), "kind": recorded["kind"],
                            "method": method, "tokens": result.token_ids, "text": result.text,
                            "decode_s": decode_s, "drafted": result.usage.drafted_tokens,
                            "accepted": result.usage.accepted_tokens})
        plain = next(r for r in results[-len(order):] if r["method"] == "off")
        for r in results[-len(order):]:
            r["identical"] = r["tokens"] == plain["tokens"]
            r["recorded"] = r["text"] == recorded["reply"]
        console.print(f"request {index + 1}/{len(data['requests'])} ({recorded['kind']}, {len(plain['tokens'])} "
                      "tokens): " + ", ".join(f"{r['method']} {rate(r):.1f} tok/s" for r in results[-len(order):]))
    return results


def rate(result: dict[str, Any]) -> float:
    return (len(result["tokens"]) - 1) / result["decode_s"] if result["decode_s"] > 0 else 0.0


def base_of(method: str) -> str:
    """The method a method's speedup is measured against: plain decoding of the same engine."""
    return "llama.cpp" if method.startswith("llama.cpp") else "off"


def rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per method and kind (and all kinds): tokens after the first over their decode seconds, acceptance, identity;
    the ratio to plain decoding on the same engine (`off`; llama.cpp's own for its methods) and the same replies."""
    out = []
    kinds = sorted({r["kind"] for r in results})
    for kind in (*kinds, "all"):
        chosen = [r for r in results if kind in ("all", r["kind"])]
        rates = {}
        for method in dict.fromkeys(r["method"] for r in chosen):
            mine = [r for r in chosen if r["method"] == method]
            tokens = sum(len(r["tokens"]) - 1 for r in mine)
            seconds = sum(r["decode_s"] for r in mine)
            drafted, accepted = sum(r["drafted"] for r in mine), sum(r["accepted"] for r in mine)
            rates[method] = tokens / seconds if seconds > 0 else None
            out.append({"method": method, "kind": kind, "replies": len(mine), "tokens": tokens,
                        "tok_s": round(rates[method], 2) if rates[method] else None,
                        "acceptance": round(accepted / drafted, 3) if drafted else None,
                        "drafted": drafted, "accepted": accepted,
                        "identical": all(r["identical"] for r in mine)})
        for row in out[len(out) - len(rates):]:
            base = rates.get(base_of(row["method"]))
            row["speedup"] = round(row["tok_s"] / base, 3) if row["tok_s"] and base else None
    return out


LLAMA_METHODS = ("llama.cpp", "llama.cpp lookup-2", "llama.cpp lookup-10")  # lookup-N: N predicted tokens


def llama_cpp_results(data: dict[str, Any], console: Console) -> list[dict[str, Any]]:
    """llama.cpp on the same prompts (the request's segments as one text, its special tokens parsed), greedy and
    unconstrained (its grammar is not ours), plain and with its own prompt-lookup decoding (llama-cpp-python's
    LlamaPromptLookupDecoding, 2 and 10 predicted tokens: the binding suggests 2 on a CPU, 10 on a GPU), in the
    configuration benchmarks.peer_tune found fastest per token; the methods rotated per request, each prompt cached
    before its reply (llama-cpp-python keeps the longest common prefix). The same keys as replay's results;
    `identical`: the reply is plain llama.cpp's."""
    from llama_cpp import Llama
    from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

    from agentcache.cache_dir import models_dir
    from benchmarks.peer_tune import best_configs
    from benchmarks.speed import llama_settings
    from engine import registry

    settings = llama_settings(best_configs(data["model"], tpot_only=True)[0])
    gguf = str(registry.gguf_path(registry.find(data["model"]), models_dir()))
    vocab = Llama(model_path=gguf, vocab_only=True, verbose=False)
    prompts = [vocab.tokenize("".join(data["texts"][key] for key in r["segments"]).encode(), add_bos=False,
                              special=True) for r in data["requests"]]
    window = max(len(p) + r["max_tokens"] for p, r in zip(prompts, data["requests"])) + 16  # the longest request fits
    # with a draft model the binding keeps every position's logits, but sizes their buffer by `logits_all` (n_batch
    # rows without it): a prompt longer than n_batch then fails, so the lookup methods ask for all logits themselves
    llms = {method: Llama(model_path=gguf, n_ctx=window, verbose=False, **settings, logits_all="lookup" in method,
                          draft_model=LlamaPromptLookupDecoding(num_pred_tokens=int(method.rsplit("-", 1)[1]))
                          if "lookup" in method else None) for method in LLAMA_METHODS}
    results = []
    for index, recorded in enumerate(data["requests"]):
        order = LLAMA_METHODS[index % len(LLAMA_METHODS):] + LLAMA_METHODS[: index % len(LLAMA_METHODS)]
        for method in order:
            llm, prompt = llms[method], prompts[index]
            eos = llm.token_eos()
            for _ in llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0):  # the prompt cached
                break
            tokens, first = [], 0.0
            for token in llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0):
                if not tokens:
                    first = time.perf_counter()
                tokens.append(token)
                if token == eos or len(tokens) >= recorded["max_tokens"]:
                    break
            results.append({"request": index, "task": recorded.get("task"), "kind": recorded["kind"],
                            "method": method, "tokens": tokens, "text": "", "drafted": 0, "accepted": 0,
                            "decode_s": time.perf_counter() - first})
        plain = next(r for r in results[-len(order):] if r["method"] == "llama.cpp")
        for r in results[-len(order):]:
            r["identical"] = r["tokens"] == plain["tokens"]
        console.print(f"request {index + 1}/{len(data['requests'])} llama.cpp ({len(plain['tokens'])} tokens): "
                      + ", ".join(f"{r['method']} {rate(r):.1f} tok/s" for r in results[-len(order):]))
    return results


def llama_build_info(name: str) -> dict[str, Any]:
    """The llama.cpp the peer rows ran: its configuration (benchmarks.peer_tune's fastest per token, else the
    defaults) and build."""
    from benchmarks.peer_tune import best_configs
    from benchmarks.speed import llama_build

    return {"config": best_configs(name, tpot_only=True)[0], **llama_build()}


def table(report: dict[str, Any]) -> Table:
    t = Table("method", "kind", "replies", "tokens", "tok/s", "x off", "acceptance", "identical",
              title=f"speculative decoding on {report['model']}'s recorded agent replies")
    for r in report["rows"]:
        t.add_row(r["method"], r["kind"], str(r.get("replies", "-")), str(r.get("tokens", "-")),
                  "-" if r["tok_s"] is None else f"{r['tok_s']:.1f}",
                  "-" if r.get("speedup") is None else f"{r['speedup']:.2f}",
                  "-" if r["acceptance"] is None else f"{r['acceptance']:.2f}",
                  r.get("skipped") or str(r["identical"]))
    return t


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--collect", type=Path, help="run the suite tasks and write their requests here")
    parser.add_argument("--tasks", default=",".join(TASKS), help="the suite tasks --collect runs")
    parser.add_argument("--model", help="the model --collect runs the tasks on (default: the default model)")
    parser.add_argument("--replay", type=Path, help="replay the requests recorded here")
    parser.add_argument("--methods", default=",".join(METHODS), help="speculation modes to replay with")
    parser.add_argument("--limit", type=int, default=None, help="replay only the first N recorded requests")
    parser.add_argument("--draft-model", help="the draft model of the draft methods (default: the registry's pair)")
    parser.add_argument("--peer", choices=("auto", "none", "only"), default="auto",
                        help="llama.cpp's rows after ours: auto (where llama-cpp-python is installed), none, or only "
                        "them")
    parser.add_argument("--json", type=Path, help="write the replay's report here")
    args = parser.parse_args(argv)
    console = Console(width=150)
    if args.collect:
        collect(args.collect, [t for t in args.tasks.split(",") if t], console, args.model)
    if args.replay:
        data = json.loads(args.replay.read_text())
        data["requests"] = data["requests"][: args.limit]
        methods = tuple(m for m in args.methods.split(",") if m)
        if "off" not in methods and args.peer != "only":
            print("error: --methods must include off (the plain replies every method is compared with)",
                  file=sys.stderr)
            return 2
        start = time.perf_counter()
        results = replay(data, methods, console, args.draft_model) if args.peer != "only" else []
        peer = args.peer == "only" or (args.peer == "auto" and llama_installed())
        results += llama_cpp_results(data, console) if peer else []
        skipped = [] if peer or args.peer == "none" else [{
            "method": "llama.cpp lookup", "kind": "all", "tok_s": None, "acceptance": None, "identical": None,
            "skipped": "not measured: llama-cpp-python is not installed here (make peers installs it)"}]
        report = {"machine": machine(), "model": data["model"], "quant": data["quant"], "tasks": data["tasks"],
                  "requests": len(data["requests"]), "rows": rows(results) + skipped,
                  "llama_cpp": llama_build_info(data["model"]) if peer else None,
                  "replies_recorded": all(r["recorded"] for r in results if r["method"] == "off"),
                  "wall_s": round(time.perf_counter() - start, 1)}
        console.print(table(report))
        if args.json:
            args.json.write_text(json.dumps(report, indent=1) + "\n")
    if not (args.collect or args.replay):
        parser.print_usage(sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
