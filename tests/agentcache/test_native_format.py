"""The native tool-call format: Qwen's chat template decides it, its tool text becomes the tools block, tagged calls
render exactly as the template renders structured tool calls, and the grammar accepts tagged calls or plain text."""

import json
from pathlib import Path

import pytest

from agentcache import PROMPTS_DIR
from agentcache.backends.constrain import Answer, ToolCall, ToolCallError, ToolCallGrammar
from agentcache.errors import AgentcacheError
from agentcache.render import SYSTEM_JOIN, ChatRenderer, reply_text
from engine.model import load_tokenizer
from layers import Context, ToolRegistry, ToolResult, UserInput, build_prefix
from layers.l3 import AssistantMessage
from layers.l3 import ToolCall as ToolCallEntry

REPO = Path(__file__).resolve().parents[2] / "examples" / "repo"
REGISTRY = ToolRegistry.from_dir(PROMPTS_DIR / "tools")


@pytest.fixture(scope="module")
def qwen_tokenizer(models_dir):
    tokenizer = load_tokenizer("qwen2.5-coder-0.5b", cache_dir=models_dir)
    assert tokenizer is not None, "qwen2.5-coder-0.5b is not installed: make model-qwen2.5-coder-0.5b"
    return tokenizer


@pytest.fixture(scope="module")
def smol_tokenizer(models_dir):
    return load_tokenizer("smollm2-135m", cache_dir=models_dir)


def _context(*entries) -> Context:
    context = build_prefix(REPO, PROMPTS_DIR, role="coder", tools=REGISTRY)
    for entry in entries:
        context.append(entry.to_block())
    return context


def test_the_template_decides_the_format(qwen_tokenizer, smol_tokenizer):
    assert ChatRenderer(qwen_tokenizer).tool_format == "native"
    assert ChatRenderer(qwen_tokenizer, "json").tool_format == "json"
    assert ChatRenderer(smol_tokenizer).tool_format == "json"
    with pytest.raises(AgentcacheError, match="no native tool-call format"):
        ChatRenderer(smol_tokenizer, "native")


def test_the_tools_block_is_the_templates_tool_list(qwen_tokenizer):
    message = ChatRenderer(qwen_tokenizer).message(next(b for b in _context() if b.kind == "tools"))
    listed = message["content"].split("<tools>\n")[1].split("\n</tools>")[0].splitlines()
    assert [json.loads(line) for line in listed] == [{"type": "function", "function": s.to_dict()} for s in REGISTRY]
    assert "<tool_call>" in message["content"] and message["role"] == "system"


def test_native_l3_renders_as_the_template_renders_structured_tool_calls(qwen_tokenizer):
    call = ToolCallEntry("read_file", {"path": "README.md", "end_line": 3})
    context = _context(UserInput("Read README.md"), call, ToolResult("read_file", "# textstats\n"),
                       AssistantMessage("It counts words."))
    renderer = ChatRenderer(qwen_tokenizer)
    ours = "".join(renderer.block_segments(context))
    head = [{"role": "system", "content": SYSTEM_JOIN.join(renderer.message(b)["content"] for b in context.prefix)}]
    structured = head + [
        {"role": "user", "content": "Read README.md"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "read_file", "arguments": {"end_line": 3, "path": "README.md"}}}]},
        {"role": "tool", "content": "# textstats\n"},
        {"role": "assistant", "content": "It counts words."},
    ]
    assert ours == qwen_tokenizer.apply_chat_template(structured, tokenize=False, add_generation_prompt=True)


def test_the_prefix_is_one_system_turn_cut_into_one_segment_per_block(qwen_tokenizer):
    context = _context(UserInput("Read README.md"))
    renderer = ChatRenderer(qwen_tokenizer)
    segments = renderer.block_segments(context)
    assert len(segments) == len(context) + 1
    prefix_text = "".join(segments[: len(context.prefix)])
    assert prefix_text.count("<|im_start|>system") == 1 and prefix_text.endswith("<|im_end|>\n")
    for block, segment in zip(context.prefix, segments):
        assert renderer.message(block)["content"] in segment


def test_formats_differ_only_in_rendering_never_in_blocks(qwen_tokenizer):
    context = _context(UserInput("Read README.md"), ToolCallEntry("read_file", {"path": "README.md"}))
    native, plain = ChatRenderer(qwen_tokenizer), ChatRenderer(qwen_tokenizer, "json")
    kinds = [b.kind for b in context]
    different = [k for k, a, b in zip(kinds, native.block_segments(context), plain.block_segments(context)) if a != b]
    assert different == ["tools", "tool_call"]
    assert reply_text(Answer("done"), "native") == "done" and reply_text(Answer("done")) == '{"answer":"done"}'


def test_native_grammar_allows_a_tagged_call_or_plain_text_and_parses_both(qwen_tokenizer):
    enabled = [s for s in REGISTRY if s.name in {"read_file", "finish"}]
    grammar = ToolCallGrammar(qwen_tokenizer, enabled, tool_format="native")
    first = grammar.new_mask(len(qwen_tokenizer))([])
    tag = qwen_tokenizer.convert_tokens_to_ids("<tool_call>")
    assert first[tag] and not first[qwen_tokenizer.convert_tokens_to_ids("<")]
    text = '<tool_call>\n{"name": "read_file", "arguments": {"path": "README.md"}}\n</tool_call>'
    matcher = grammar.new_matcher()
    assert matcher.consume_tokens(qwen_tokenizer.encode(text, add_special_tokens=False)) and matcher.is_accepting()
    assert grammar.parse(text) == ToolCall("read_file", {"path": "README.md"})
    assert grammar.parse("  The words are split in words().\n") == Answer("The words are split in words().")
    disabled = '<tool_call>\n{"name": "write_file", "arguments": {"path": "a", "content": "b"}}\n</tool_call>'
    with pytest.raises(ToolCallError, match="disabled tool 'write_file'"):
        grammar.parse(disabled)
    with pytest.raises(ToolCallError, match="not closed"):
        grammar.parse('<tool_call>\n{"name": "read_file", "arguments": {"path": "README.md"}}')
    with pytest.raises(ToolCallError, match="do not match its parameters"):
        grammar.parse('<tool_call>\n{"name": "read_file", "arguments": {"path": 3}}\n</tool_call>')
    write = qwen_tokenizer.encode('<tool_call>\n{"name": "write', add_special_tokens=False)
    assert not grammar.new_matcher().consume_tokens(write)  # a disabled tool cannot even be started


def test_a_bare_or_fenced_call_object_is_a_call_and_an_answer_cannot_start_like_one(qwen_tokenizer):
    enabled = [s for s in REGISTRY if s.name in {"read_file", "finish"}]
    grammar = ToolCallGrammar(qwen_tokenizer, enabled, tool_format="native")
    call = '{"name": "read_file", "arguments": {"path": "README.md"}}'
    for text in (call, f"```json\n{call}\n```"):
        matcher = grammar.new_matcher()
        assert matcher.consume_tokens(qwen_tokenizer.encode(text, add_special_tokens=False)) and matcher.is_accepting()
        assert grammar.parse(text) == ToolCall("read_file", {"path": "README.md"})
    for text in ('{"answer": 3}', '```python\nprint(3)\n```'):
        assert not grammar.new_matcher().consume_tokens(qwen_tokenizer.encode(text, add_special_tokens=False))
    with pytest.raises(ToolCallError, match="disabled tool 'search'"):
        grammar.parse('{"name": "search", "arguments": {"pattern": "x"}}')
    with pytest.raises(ToolCallError, match="block is not closed"):  # cut off by max_tokens: never an answer
        grammar.parse(f"```json\n{call[:30]}")


def test_a_grammar_without_answers_masks_plain_text(qwen_tokenizer):
    enabled = [s for s in REGISTRY if s.name in {"read_file", "finish"}]
    grammar = ToolCallGrammar(qwen_tokenizer, enabled, allow_answer=False, tool_format="native")
    first = grammar.new_mask(len(qwen_tokenizer))([])
    assert first[qwen_tokenizer.convert_tokens_to_ids("<tool_call>")]
    assert not first[qwen_tokenizer.encode("The", add_special_tokens=False)[0]]
