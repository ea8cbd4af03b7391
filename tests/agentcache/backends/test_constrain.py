"""Constrained tool-call decoding with real llguidance, the embedded model's tokenizer and the real engine."""

import json
import time
from typing import Any

import numpy as np
import pytest
import torch

from agentcache.backends.constrain import ANSWER_LINE_CHARS, Answer, ToolCall, ToolCallError, ToolCallGrammar, ll_tokenizer
from agentcache.backends.local import tensor_mask
from agentcache.cache_dir import models_dir
from agentcache.render import format_instructions
from agentcache import PROMPTS_DIR
from engine import Engine, Request, load_model
from engine.model import load_tokenizer
from layers import ToolRegistry

REGISTRY = ToolRegistry.from_dir(PROMPTS_DIR / "tools")
ALL_TOOLS = list(REGISTRY)
READ_CALL = '{"name": "read_file", "arguments": {"path": "README.md", "start_line": 2}}'
SEARCH_CALL = '{"name": "search", "arguments": {"pattern": "def main"}}'


@pytest.fixture(scope="module")
def smol():
    return load_model("smollm2-135m", cache_dir=models_dir())


@pytest.fixture(scope="module")
def engine(smol):
    return Engine(smol, capacity_bytes=64 << 20)


def tools(*names: str) -> list:
    return [REGISTRY.get(name) for name in names]


def schema_errors(value: Any, schema: dict[str, Any], where: str = "arguments") -> list[str]:
    """An independent check of the JSON Schema subset the tool specs use."""
    kinds = {"object": dict, "string": str, "integer": int, "number": (int, float), "boolean": bool}
    kind = schema.get("type")
    if kind and (not isinstance(value, kinds[kind]) or (kind != "boolean" and isinstance(value, bool))):
        return [f"{where}: expected {kind}"]
    errors = [f"{where}: below minimum" for _ in [0] if "minimum" in schema and value < schema["minimum"]]
    errors += [f"{where}: above maximum" for _ in [0] if "maximum" in schema and value > schema["maximum"]]
    if kind == "object":
        props = schema.get("properties", {})
        errors += [f"{where}: missing {key}" for key in schema.get("required", []) if key not in value]
        if schema.get("additionalProperties") is False:
            errors += [f"{where}: unexpected {key}" for key in value if key not in props]
        errors += [e for key in value if key in props for e in schema_errors(value[key], props[key], key)]
    return errors


def chat_prompt(tokenizer, question: str) -> list[str]:
    tool_lines = "\n".join(json.dumps(spec.to_dict(), sort_keys=True) for spec in ALL_TOOLS)
    system = f"You are a coding agent working in a small repository.\nTools:\n{tool_lines}\n{format_instructions()}"
    messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    return [tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)]


def allowed_ids(mask: torch.Tensor) -> list[int]:
    return torch.nonzero(mask).flatten().tolist()


def test_llguidance_tokenizer_is_built_once_per_tokenizer(smol):
    started = time.perf_counter()
    first = ll_tokenizer(smol.tokenizer)
    built_s = time.perf_counter() - started
    started = time.perf_counter()
    assert ll_tokenizer(smol.tokenizer) is first
    assert time.perf_counter() - started < 0.01
    print(f"llguidance tokenizer: first call {built_s:.3f} s")


def test_format_instructions_are_constant_and_name_no_tool():
    text = format_instructions()
    assert text == format_instructions() and text.endswith("\n")
    assert not any(spec.name in text for spec in ALL_TOOLS)


def test_parse_accepts_calls_and_answers(smol):
    grammar = ToolCallGrammar(smol.tokenizer, ALL_TOOLS)
    assert grammar.parse(READ_CALL) == ToolCall("read_file", {"path": "README.md", "start_line": 2})
    assert grammar.parse('{"answer": "done"}') == Answer("done")
    loose = '{ "arguments":{"start_line":2,"path":"README.md"},"name":"read_file" }\n'
    assert grammar.parse(loose) == ToolCall("read_file", {"start_line": 2, "path": "README.md"})


@pytest.mark.parametrize("text, message", [
    (READ_CALL[:40], "cut off"),
    ('{"name": "write_file", "arguments": {"path": "a", "content": "b"}}', "disabled tool 'write_file'"),
    ('{"name": "read_file", "arguments": {"path": "a", "start_line": 0}}', "do not match"),
    ('{"name": "read_file", "arguments": {"path": "a", "mode": "r"}}', "do not match"),
    ('{"name": "read_file", "arguments": {}}', "do not match"),
    ('{"name": "read_file"}', "must be"),
    ('["read_file"]', "JSON object"),
])
def test_parse_rejects_unusable_replies(smol, text, message):
    grammar = ToolCallGrammar(smol.tokenizer, tools("read_file", "finish"))
    with pytest.raises(ToolCallError, match=message):
        grammar.parse(text)


def test_parse_rejects_answer_when_answers_are_off(smol):
    grammar = ToolCallGrammar(smol.tokenizer, tools("finish"), allow_answer=False)
    with pytest.raises(ToolCallError, match="not allowed"):
        grammar.parse('{"answer": "done"}')


def test_nothing_enabled_is_an_error(smol):
    with pytest.raises(ToolCallError, match="no tool"):
        ToolCallGrammar(smol.tokenizer, [], allow_answer=False)


def test_mask_matches_llguidance_logit_bias_and_pads_model_width(smol):
    grammar = ToolCallGrammar(smol.tokenizer, ALL_TOOLS)
    width = len(smol.tokenizer) + 64
    prefix = smol.tokenizer.encode('{"name": "', add_special_tokens=False)
    mask = tensor_mask(grammar.new_mask(width))(prefix)
    matcher = grammar.new_matcher()
    assert matcher.consume_tokens(prefix)
    bias = torch.frombuffer(bytearray(matcher.compute_logit_bias()), dtype=torch.uint8)
    assert mask.dtype == torch.bool and mask.shape == (width,)
    assert torch.equal(mask[: bias.numel()], bias > 0)
    assert not mask[bias.numel():].any()


def test_the_grammar_mask_is_numpy_and_the_engine_gets_the_same_bits_as_a_tensor(smol):
    grammar = ToolCallGrammar(smol.tokenizer, ALL_TOOLS)
    prefix = smol.tokenizer.encode('{"name": "', add_special_tokens=False)
    allowed = grammar.new_mask(smol.config.vocab_size)(prefix)
    matcher = grammar.new_matcher()
    assert matcher.consume_tokens(prefix)
    bias = np.frombuffer(matcher.compute_logit_bias(), dtype=np.uint8)
    assert isinstance(allowed, np.ndarray) and allowed.dtype == np.bool_
    assert np.array_equal(allowed[: bias.size], bias[: smol.config.vocab_size] > 0)
    tensor = tensor_mask(grammar.new_mask(smol.config.vocab_size))(prefix)
    assert tensor.dtype == torch.bool and tensor.tolist() == allowed.tolist()


def test_disabled_tool_names_are_never_allowed(smol):
    enabled = ["finish", "run_command", "search"]
    grammar = ToolCallGrammar(smol.tokenizer, tools(*enabled))
    prefix = smol.tokenizer.encode('{"name": "', add_special_tokens=False)
    mask = tensor_mask(grammar.new_mask(smol.config.vocab_size))(prefix)
    allowed = allowed_ids(mask)
    assert allowed
    for token in allowed:
        piece = grammar.ll_tokenizer.decode_str([token])
        assert any(f'{name}"'.startswith(piece) or piece.startswith(f'{name}"') for name in enabled), piece
    for spec in ALL_TOOLS:  # a disabled name cannot be written whole (run_tests may start as run_command does)
        if spec.name not in enabled:
            ids = smol.tokenizer.encode(f'{spec.name}"', add_special_tokens=False)
            walk = tensor_mask(grammar.new_mask(smol.config.vocab_size))
            assert not all(walk(prefix + ids[:i])[ids[i]] for i in range(len(ids))), spec.name


def test_eos_is_allowed_only_when_the_json_is_complete(smol):
    grammar = ToolCallGrammar(smol.tokenizer, ALL_TOOLS)
    (eos,) = smol.eos_token_ids
    ids = smol.tokenizer.encode(READ_CALL, add_special_tokens=False)
    mask = tensor_mask(grammar.new_mask(smol.config.vocab_size))
    for n in range(len(ids)):
        assert not mask(ids[:n])[eos], smol.tokenizer.decode(ids[:n])
    assert allowed_ids(mask(ids)) == [eos]


def test_mask_follows_a_shorter_history(smol):
    grammar = ToolCallGrammar(smol.tokenizer, ALL_TOOLS)
    ids = smol.tokenizer.encode(READ_CALL, add_special_tokens=False)
    mask = tensor_mask(grammar.new_mask(smol.config.vocab_size))
    mask(ids[:12])
    assert torch.equal(mask(ids[:5]), tensor_mask(grammar.new_mask(smol.config.vocab_size))(ids[:5]))


def test_mask_follows_a_history_that_diverged(smol):
    """Speculative decoding asks after drafted tokens, then after the ones it kept and a different next token: the
    mask is the one a fresh matcher gives for that history."""
    grammar = ToolCallGrammar(smol.tokenizer, ALL_TOOLS)
    ids = smol.tokenizer.encode(READ_CALL, add_special_tokens=False)
    other = smol.tokenizer.encode(SEARCH_CALL, add_special_tokens=False)
    fresh = lambda history: tensor_mask(grammar.new_mask(smol.config.vocab_size))(history)
    mask = tensor_mask(grammar.new_mask(smol.config.vocab_size))
    mask(ids[:12])
    shared = next(i for i, (a, b) in enumerate(zip(ids, other)) if a != b)
    assert torch.equal(mask(other[: shared + 3]), fresh(other[: shared + 3]))
    assert torch.equal(mask(ids[:12]), fresh(ids[:12]))


def test_forced_tokens_are_what_the_grammar_leaves_no_choice_about(smol):
    """After `{"name": "read` only one tool fits: the rest of its name and the arguments' opening are forced."""
    grammar = ToolCallGrammar(smol.tokenizer, ALL_TOOLS)
    ids = smol.tokenizer.encode(READ_CALL, add_special_tokens=False)
    mask = tensor_mask(grammar.new_mask(smol.config.vocab_size))
    for n in range(12):
        forced = mask.forced(ids[:n])
        assert READ_CALL.startswith(smol.tokenizer.decode(ids[:n] + forced))
        for i, token in enumerate(forced):  # each forced token is the only one the mask allows there
            assert allowed_ids(mask(ids[:n] + forced[:i])) == [token]
    assert smol.tokenizer.decode(mask.forced(ids[:5])).startswith('_file", "arguments": {"')


def test_mask_step_is_fast(smol):
    grammar = ToolCallGrammar(smol.tokenizer, ALL_TOOLS)
    call = json.dumps({"name": "write_file", "arguments": {"path": "notes.md"}}) + "\n```\n" + "line\n" * 12 + "```"
    ids = smol.tokenizer.encode(call, add_special_tokens=False)
    mask = tensor_mask(grammar.new_mask(smol.config.vocab_size))
    steps = []
    for n in range(len(ids) + 1):
        started = time.perf_counter()
        mask(ids[:n])
        steps.append(time.perf_counter() - started)
    print(f"mask per step over {len(steps)} steps: mean {sum(steps) / len(steps) * 1e3:.2f} ms, "
          f"max {max(steps) * 1e3:.2f} ms")
    assert max(steps) < 0.1


def walks(grammar: ToolCallGrammar, text: str) -> bool:
    """Whether the grammar's mask allows `text`'s tokens one after another and then the end of the reply."""
    ll = grammar.ll_tokenizer
    ids = ll.tokenize_str(text)
    mask = grammar.new_mask(ll.vocab_size)
    return all(mask(ids[:i])[ids[i]] for i in range(len(ids))) and bool(mask(ids)[ll.eos_token])


@pytest.mark.parametrize("tool_format, line, other", [
    ("native", "Answer: `textstats/words.py`", "The function is in `textstats/words.py`."),
    ("json", '{"answer": "textstats/words.py"}', '{"answer": "It is in\\ntextstats/words.py"}'),
])
def test_an_answer_asked_for_on_one_line_is_one_short_line(models_dir, tool_format, line, other):
    tokenizer = load_tokenizer("qwen2.5-coder-0.5b", cache_dir=models_dir)  # the native tags are its tokens
    read_only = tools("list_files", "read_file", "search")
    free = ToolCallGrammar(tokenizer, read_only, tool_format=tool_format)
    one_line = ToolCallGrammar(tokenizer, read_only, tool_format=tool_format, answer_line=True)
    assert walks(free, line) and walks(one_line, line)
    assert walks(free, other) and not walks(one_line, other)
    call = f"<tool_call>\n{READ_CALL}\n</tool_call>" if tool_format == "native" else READ_CALL
    assert walks(free, call) and walks(one_line, call)  # looking further is still open
    words = "word " * (ANSWER_LINE_CHARS // 5 + 1)
    long = f"Answer: {words}" if tool_format == "native" else json.dumps({"answer": words})
    assert walks(free, long) and not walks(one_line, long)
    assert isinstance(one_line.parse(line), Answer) and isinstance(one_line.parse(other), Answer)  # parsing takes any


@pytest.mark.parametrize("names, allow_answer, question", [
    (["list_files", "read_file", "search"], False, "Show me the contents of README.md"),
    (["finish"], True, "Show me the contents of README.md"),
])
def test_real_model_reply_is_a_valid_call_to_an_enabled_tool(smol, engine, names, allow_answer, question):
    grammar = ToolCallGrammar(smol.tokenizer, tools(*names), allow_answer)
    request = Request(chat_prompt(smol.tokenizer, question), max_tokens=96,
                      logits_mask=tensor_mask(grammar.new_mask(smol.config.vocab_size)))
    result = engine.generate(request)
    assert result.finish_reason == "stop", result.text
    reply = grammar.parse(result.text)
    print(f"{names}: {result.text}")
    if isinstance(reply, Answer):
        assert allow_answer
        return
    assert reply.name in names
    assert schema_errors(reply.arguments, REGISTRY.get(reply.name).parameters) == []
