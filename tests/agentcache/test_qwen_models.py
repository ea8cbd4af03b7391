"""Each Qwen2.5-Coder model for real: assembled from its parts and checked against its pinned sha256, loaded, and
asked for one constrained native tool call on the real engine, which must parse into a schema-valid call."""

import hashlib
import json
import re
from pathlib import Path

import pytest
import torch

from agentcache import PROMPTS_DIR
from agentcache.backends.constrain import ToolCall, ToolCallGrammar
from agentcache.backends.local import tensor_mask
from agentcache.render import ChatRenderer
from engine import Engine, Request, load_model, registry
from layers import ToolRegistry, UserInput, build_prefix
from tests.agentcache.backends.test_constrain import schema_errors

REPO = Path(__file__).resolve().parents[2] / "examples" / "repo"
REGISTRY = ToolRegistry.from_dir(PROMPTS_DIR / "tools")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.mark.parametrize("name", ["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"])
def test_qwen_assembles_verifies_and_makes_a_constrained_tool_call(name, models_dir):
    entry = registry.find(name)
    assert entry.installed(), f"{name} is not installed: make model-{name}"
    model = load_model(name, cache_dir=models_dir)
    gguf = models_dir / "gguf" / entry.file
    assert gguf.stat().st_size == entry.bytes and _sha256(gguf) == entry.sha256  # hashed here, independently

    renderer = ChatRenderer(model.tokenizer)
    assert renderer.tool_format == "native"
    l1 = [b for b in build_prefix(REPO, PROMPTS_DIR, role="coder", tools=REGISTRY) if b.layer.name == "L1"]
    segments = renderer.block_segments([*l1, UserInput("Show me the file README.md.").to_block()])
    enabled = [spec for spec in REGISTRY if spec.name != "run_command"]
    grammar = ToolCallGrammar(model.tokenizer, enabled, allow_answer=False, tool_format="native")
    engine = Engine(model, capacity_bytes=256 << 20)
    result = engine.generate(Request(segments, max_tokens=48,
                                     logits_mask=tensor_mask(grammar.new_mask(model.config.vocab_size))))

    assert result.finish_reason == "stop", result.text
    call = grammar.parse(result.text)
    assert isinstance(call, ToolCall) and call.name in {spec.name for spec in enabled}
    assert schema_errors(call.arguments, REGISTRY.get(call.name).parameters) == []
    # one call object and nothing else, in a form the native grammar admits: tagged, fenced as json, or bare
    form = re.fullmatch(r"<tool_call>\s*(.*)\s*</tool_call>|```json\s*(.*)\s*```|(\{.*\})", result.text.strip(), re.S)
    assert form is not None, result.text
    assert json.loads(next(g for g in form.groups() if g)) == {"name": call.name, "arguments": call.arguments}


def test_the_harness_default_is_the_registry_default_and_the_env_overrides_it(monkeypatch):
    from agentcache.config import DEFAULT_MODEL, RunConfig

    assert DEFAULT_MODEL == registry.DEFAULT_MODEL and registry.find(DEFAULT_MODEL) is not None
    monkeypatch.delenv("AGENTCACHE_MODEL")
    assert RunConfig().model == DEFAULT_MODEL
    monkeypatch.setenv("AGENTCACHE_MODEL", "qwen2.5-coder-1.5b")
    assert RunConfig().model == "qwen2.5-coder-1.5b"


def test_speculative_decoding_on_the_real_pair_leaves_greedy_output_unchanged(models_dir):
    """The default 1.5B with its registry draft model, the 0.5B, as users load them (dtype and quant auto): a reply
    that copies its context (lookup drafts) and one that does not, token for token the same under every mode, with
    drafts from each source verified."""
    target = load_model("qwen2.5-coder-1.5b", dtype="auto", cache_dir=models_dir, quant="auto")
    draft = load_model(registry.find("qwen2.5-coder-1.5b").draft, dtype="auto", cache_dir=models_dir, quant="auto")
    engine = Engine(target, capacity_bytes=256 << 20, draft=draft)
    source = (REPO / "textstats" / "words.py").read_text()
    for task in (f"Here is a file:\n{source}\nRepeat its first function exactly, renamed to `count_all`.",
                 "Write a haiku about caches."):
        segments = [target.tokenizer.apply_chat_template([{"role": "user", "content": task}], tokenize=False,
                                                         add_generation_prompt=True)]
        engine.generate(Request(segments, max_tokens=1))  # every mode from the same cached pages (in bfloat16 a
        # prompt prefilled in one piece and one prefilled after cached pages may round a near tie apart)
        results = {mode: engine.generate(Request(segments, max_tokens=40, speculate=mode))
                   for mode in ("off", "lookup", "draft", "auto")}
        for mode in ("lookup", "draft", "auto"):
            assert results[mode].token_ids == results["off"].token_ids, (mode, results[mode].text)
        assert results["draft"].usage.drafted_tokens > 0
    assert engine.drafter.engine.stats()["requests"] > 0


def test_a_verification_of_the_real_model_computes_its_decode_steps_bit_for_bit(models_dir, monkeypatch):
    """The default 1.5B as users load it: drafts of 8 given tokens (the plain reply's, so all kept), and every row of
    every verification equals the logits of the plain decode step at that position, bit for bit. (In bfloat16 on a CPU
    with its dot product, a verification's rows over one sequence's keys once took prefill's repacked attention, whose
    softmax weights are rounded to bfloat16: rows differed by up to 0.66 in a logit, and the suite's replayed replies
    picked another tool.)"""
    from engine.model_runner import ModelRunner
    from engine.speculate import MAX_DRAFT, Speculation

    model = load_model("qwen2.5-coder-1.5b", dtype="auto", cache_dir=models_dir, quant="auto")
    engine = Engine(model, capacity_bytes=256 << 20)
    source = (REPO / "textstats" / "words.py").read_text()
    segments = [model.tokenizer.apply_chat_template([{"role": "user", "content": f"{source}\nExplain it."}],
                                                    tokenize=False, add_generation_prompt=True)]
    prompt_length = len(engine.tokenize(segments)[0])
    engine.generate(Request(segments, max_tokens=1))
    steps, rows = [], []
    decode, verify = ModelRunner.decode, ModelRunner.verify
    monkeypatch.setattr(ModelRunner, "decode", lambda self, batch: steps.append(decode(self, batch)) or steps[-1])
    reply = engine.generate(Request(segments, max_tokens=28)).token_ids
    monkeypatch.setattr(ModelRunner, "verify", lambda self, batch, draft: rows.append(verify(self, batch, draft))
                        or rows[-1])
    monkeypatch.setattr(Speculation, "propose", lambda self, tokens, room, costs, after=None:
                        reply[len(tokens) - prompt_length:][: min(room, MAX_DRAFT)])
    spec = engine.generate(Request(segments, max_tokens=28, speculate="lookup"))
    assert spec.token_ids == reply and max(len(r) for r in rows) == MAX_DRAFT + 1
    verified = torch.cat(rows)
    assert torch.equal(verified, torch.cat(steps)[: len(verified)])
